"""Process environment the suite needs before torch or Keras is imported."""

import os
import sys


class ConfigError(Exception):
    """A setting the suite cannot run with; its message is one line for the user."""


def prepare_environment():
    """Select the torch backend for Keras and put a Keras checkout on the path.

    Raises ConfigError when KERAS_BACKEND names another backend or
    KDIST_KERAS is not a Keras source tree.
    """
    backend = os.environ.get("KERAS_BACKEND", "torch")
    if backend != "torch":
        raise ConfigError(
            f"KERAS_BACKEND={backend!r}: kdist-props tests Keras on torch; "
            "unset KERAS_BACKEND or set it to 'torch'"
        )
    os.environ["KERAS_BACKEND"] = "torch"
    # Ranks share 2 cores with the driver: one intra-op thread each avoids
    # oversubscription that turns 4 ms examples into 40 ms ones.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    checkout = keras_checkout()
    if checkout and checkout not in sys.path:
        sys.path.insert(0, checkout)
        # Child processes started by torchrun or subprocess see it too.
        paths = [checkout, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def keras_checkout():
    """The absolute path named by KDIST_KERAS, validated, or None."""
    path = os.environ.get("KDIST_KERAS")
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(os.path.join(path, "keras", "src", "__init__.py")):
        raise ConfigError(
            f"KDIST_KERAS={path} is not a Keras source tree (no keras/src/__init__.py); "
            "point it at the root of a keras-team/keras checkout or unset it"
        )
    return path
