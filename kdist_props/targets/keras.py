"""The `keras` target: the installed Keras, or the checkout named by KDIST_KERAS.

Public API first: every clause drives Keras as a user does (keras.distribution
objects, TensorLayout.backend_layout, keras.distribution.distribute_tensor,
keras.Variable under a scope or with a layout, keras.ops, get_weights) and
reads the torch facts from what those return. Private backend functions, whose
names, signatures and return shapes differ between branches, are only probes
for clauses with no public route, validated before use. What the suite cannot
read is Incompatible (never a failure); a missing piece is Unsupported, with
the piece and the Keras version in the reason.
"""

import importlib
import inspect

import keras
from torch.distributed.device_mesh import DeviceMesh as TorchDeviceMesh

from kdist_props.contract.specs import MODEL_PARALLEL
from kdist_props.targets.base import Incompatible, Target, Unreadable, Unsupported
from kdist_props.targets.keras_models import KerasModels, found, placements_of, tensor_of

BACKEND_MODULE = "keras.src.backend.torch.distribution_lib"

# Clauses whose public route (TensorLayout.backend_layout, DeviceMesh.backend_mesh,
# keras.distribution.distribute_tensor) ends in the torch backend's
# distribution_lib: without that module they cannot work. ops.matmul is here
# because only that module makes DTensors: without it Keras' matmul never meets one.
NEEDS_BACKEND_MODULE = ("layout.placements", "mesh.identity", "mesh.reuse", "tensor.storage", "ops.matmul",
                        # Released Keras with no torch distribution_lib keeps every value plain, whatever the API
                        # accepts: these would only say that again.
                        "tensor.inputs", "tensor.input-unchanged", "variable.explicit-layout", "layoutmap.values",
                        "distribution.defaults",
                        # Without it a model's variables are plain tensors built by one code path on every rank.
                        "variable.init", "train.batch-norm", "eval.count-metrics")
# Clauses with no public route: backend probes, used where present.
BACKEND_PROBES = {"data.input": "distribute_data_input"}


def find_backend_module():
    try:
        return importlib.import_module(BACKEND_MODULE)
    except ImportError:
        return None


def torch_distribution_gap():
    """Why this Keras has no torch distribution, from what its public API does
    (whatever its module layout: a release with no backend module, or a tree
    whose module exists but defines next to nothing), or None when it has one.
    keras.distribution.list_devices() is the public function every
    distribution starts from; it must list this process's devices."""
    try:
        devices = keras.distribution.list_devices()
    except Exception as error:
        return (f"keras {keras.__version__}: no torch distribution (keras.distribution.list_devices() raises "
                f"{type(error).__name__}: {error})")
    if not devices:
        return f"keras {keras.__version__}: no torch distribution (keras.distribution.list_devices() lists no device)"
    return None


def construction_gap():
    """Why this Keras cannot even build the simplest distribution on torch
    (DataParallel on one CPU device), or None: without torch distribution,
    Keras 3.12 to 3.14 raise there (distribution_lib is None), 3.15 builds it."""
    try:
        mesh = keras.distribution.DeviceMesh((1,), ["batch"], ["cpu:0"])
        keras.distribution.DataParallel(device_mesh=mesh)
    except Exception as error:
        return (f"keras {keras.__version__}: keras.distribution.DataParallel cannot be built on torch "
                f"({type(error).__name__}: {error})")
    return None


class KerasTarget(KerasModels, Target):
    name = "keras"

    def __init__(self):
        self.gap = torch_distribution_gap()
        self.lib = find_backend_module() if self.gap is None else None
        # Every clause builds a distribution or needs the backend module.
        self.nothing_runs = construction_gap() if self.gap is not None else None

    def version(self):
        return keras.__version__

    def describe(self):
        facts = super().describe()
        facts["keras_backend_module"] = getattr(self.lib, "__file__", None)
        facts["torch_distribution"] = self.gap or "present"
        return facts

    def missing(self, piece):
        if self.gap is not None:
            return self.gap
        if self.lib is None:
            return f"keras {keras.__version__}: keras.src.backend.torch has no distribution_lib"
        if not hasattr(self.lib, piece):
            return f"keras {keras.__version__}: {BACKEND_MODULE} has no {piece}"
        return None

    def unsupported(self, clause):
        if self.nothing_runs is not None:
            return f"{self.gap}; {self.nothing_runs}"
        # The other clauses use public Keras only and run on every Keras.
        if clause in BACKEND_PROBES:
            return self.missing(BACKEND_PROBES[clause])
        if clause in NEEDS_BACKEND_MODULE and self.lib is None:
            return self.gap or f"keras {keras.__version__}: keras.src.backend.torch has no distribution_lib"
        return None

    def _piece(self, name):
        reason = self.missing(name)
        if reason:
            raise Unsupported(reason)
        return getattr(self.lib, name)

    def reset(self):
        keras.distribution.set_distribution(None)

    def make_distribution(self, spec, device_mesh):
        # Every rank feeds its own slice already: Keras must not shard it again.
        if spec.kind == MODEL_PARALLEL:
            return self.layout_map_distribution(device_mesh, [(path, tuple(axes)) for path, axes in spec.layout_map],
                                                spec.batch_dim_name)
        return keras.distribution.DataParallel(device_mesh=device_mesh, auto_shard_dataset=False)

    def layout_map_distribution(self, device_mesh, entries, batch_dim_name):
        layout_map = keras.distribution.LayoutMap(device_mesh)
        for key, value in entries:
            layout_map[key] = value
        return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name=batch_dim_name,
                                                auto_shard_dataset=False)

    def default_data_parallel(self):
        return keras.distribution.DataParallel()

    def list_devices(self):
        return keras.distribution.list_devices()

    def variable_layout(self, distribution, variable):
        return distribution.get_variable_layout(variable)

    def to_placements(self, layout):
        backend_layout = layout.backend_layout
        # master returns a holder with .placements; a branch may return the placements themselves.
        return placements_of(getattr(backend_layout, "placements", backend_layout), "TensorLayout.backend_layout")

    def to_backend_mesh(self, device_mesh):
        # Public route: DeviceMesh.backend_mesh (memoized per DeviceMesh object on
        # master). The backend's _to_backend_mesh only where Keras has no such property.
        if hasattr(type(device_mesh), "backend_mesh"):
            mesh, source = device_mesh.backend_mesh, "DeviceMesh.backend_mesh"
        else:
            mesh, source = self._piece("_to_backend_mesh")(device_mesh), f"{BACKEND_MODULE}._to_backend_mesh"
        if not isinstance(mesh, TorchDeviceMesh):
            raise Unreadable(f"{source} returned {found(mesh)}, not a torch DeviceMesh")
        return mesh

    def distribute_tensor(self, value, layout):
        return tensor_of(keras.distribution.distribute_tensor(value, layout), "keras.distribution.distribute_tensor")

    def distribute_data_input(self, local_batch, layout, batch_dim_name):
        # A backend probe: JAX's form takes (batch, layout, batch_dim_name), torch master's (batch, layout).
        name = BACKEND_PROBES["data.input"]
        distribute = self._piece(name)
        parameters = list(inspect.signature(distribute).parameters)
        if len(parameters) == 3:
            return tensor_of(distribute(local_batch, layout, batch_dim_name), name)
        if len(parameters) == 2:
            return tensor_of(distribute(local_batch, layout), name)
        raise Incompatible(f"{BACKEND_MODULE}.{name} takes {tuple(parameters)}, not (batch, layout[, batch_dim_name])")

    def matmul(self, a, b):
        return keras.ops.matmul(a, b)
