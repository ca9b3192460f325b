"""The `keras` target: the installed Keras, or the checkout named by KDIST_KERAS.

Keras' torch distribution code moves between versions and branches, so the
adapter looks every piece up by name and maps what it finds onto the target
interface; a clause whose pieces are missing is unsupported, with the missing
piece and the Keras version in the reason.
"""

import importlib
import inspect

import keras

from kdist_props.specs import MODEL_PARALLEL
from kdist_props.targets.base import Target, Unsupported

BACKEND_MODULE = "keras.src.backend.torch.distribution_lib"

# What each Tier A clause calls in the backend module (None: only Keras' public,
# backend-independent API, present in every Keras 3).
PIECES = {
    "layout.variable": None,
    "layout.placements": "_to_backend_layout",
    "variable.wrapping": "distribute_variable",
    "mesh.identity": "_to_backend_mesh",
    "mesh.reuse": "_to_backend_mesh",
    "tensor.storage": "distribute_tensor",
    "data.input": "distribute_data_input",
    # Only the backend module makes DTensors; without it Keras' matmul never meets one.
    "ops.matmul": "distribute_tensor",
}


def find_backend_module():
    try:
        return importlib.import_module(BACKEND_MODULE)
    except ImportError:
        return None


class KerasTarget(Target):
    name = "keras"

    def __init__(self):
        self.lib = find_backend_module()

    def version(self):
        return keras.__version__

    def describe(self):
        facts = super().describe()
        facts["keras_backend_module"] = getattr(self.lib, "__file__", None)
        return facts

    def missing(self, piece):
        if self.lib is None:
            return f"keras {keras.__version__}: keras.src.backend.torch has no distribution_lib"
        if not hasattr(self.lib, piece):
            return f"keras {keras.__version__}: {BACKEND_MODULE} has no {piece}"
        return None

    def unsupported(self, clause):
        piece = PIECES.get(clause, "Tier B")
        if piece == "Tier B":
            return f"keras {keras.__version__}: the keras target has no Tier B adapter yet ({clause})"
        return self.missing(piece) if piece else None

    def _piece(self, name):
        reason = self.missing(name)
        if reason:
            raise Unsupported(reason)
        return getattr(self.lib, name)

    def reset(self):
        keras.distribution.set_distribution(None)

    def make_distribution(self, spec, device_mesh):
        if spec.kind == MODEL_PARALLEL:
            layout_map = keras.distribution.LayoutMap(device_mesh)
            for path, axes in spec.layout_map:
                layout_map[path] = tuple(axes)
            return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name=spec.batch_dim_name)
        return keras.distribution.DataParallel(device_mesh=device_mesh)

    def variable_layout(self, distribution, variable):
        return distribution.get_variable_layout(variable)

    def to_placements(self, layout):
        backend_layout = self._piece("_to_backend_layout")(layout)
        # master returns a holder with .placements; other branches may return the tuple itself.
        return tuple(getattr(backend_layout, "placements", backend_layout))

    def to_backend_mesh(self, device_mesh):
        return self._piece("_to_backend_mesh")(device_mesh)

    def distribute_variable(self, value, layout, trainable):
        distribute = self._piece("distribute_variable")
        if "trainable" in inspect.signature(distribute).parameters:
            return distribute(value, layout, trainable=trainable)
        return distribute(value, layout)

    def distribute_tensor(self, value, layout):
        return self._piece("distribute_tensor")(value, layout)

    def distribute_data_input(self, local_batch, layout, batch_dim_name):
        distribute = self._piece("distribute_data_input")
        # JAX's form takes batch_dim_name; torch master's takes (batch, layout).
        if len(inspect.signature(distribute).parameters) >= 3:
            return distribute(local_batch, layout, batch_dim_name)
        return distribute(local_batch, layout)

    def matmul(self, a, b):
        return keras.ops.matmul(a, b)
