"""kdist-props: property-based correctness suite for Keras 3 distribution on torch."""

from kdist_props.environment import ConfigError, prepare_environment

__version__ = "0.1.0"

# Keras picks its backend at first import; the suite must decide before anyone
# (driver, zygote or rank) imports it. A bad setting is kept, not raised here,
# so that pytest and the CLI can report it as one line.
try:
    prepare_environment()
    ENVIRONMENT_ERROR = None
except ConfigError as error:
    ENVIRONMENT_ERROR = error
