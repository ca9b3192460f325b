"""kdist-props: property-based correctness suite for Keras 3 distribution on torch."""

from kdist_props.environment import prepare_environment

__version__ = "0.1.0"

# Keras picks its backend at first import; the suite must decide before anyone
# (driver, forkserver or rank) imports it.
prepare_environment()
