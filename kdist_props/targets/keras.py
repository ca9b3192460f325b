"""The `keras` target: the installed Keras, or the checkout named by KDIST_KERAS.

Keras' torch distribution code moves between versions and branches, so the
adapter looks every piece up by name and maps what it finds onto the target
interface; a clause whose pieces are missing is unsupported, with the missing
piece and the Keras version in the reason.
"""

import importlib
import inspect

import keras
import numpy as np
import torch
from torch.distributed.tensor import DTensor

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
        # Tier B clauses use public Keras only and run on every Keras.
        piece = PIECES.get(clause)
        return self.missing(piece) if piece else None

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
            layout_map = keras.distribution.LayoutMap(device_mesh)
            for path, axes in spec.layout_map:
                layout_map[path] = tuple(axes)
            return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name=spec.batch_dim_name,
                                                    auto_shard_dataset=False)
        return keras.distribution.DataParallel(device_mesh=device_mesh, auto_shard_dataset=False)

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

    # -- Tier B: real Keras layers, optimizers and trainers ------------------

    def build_model(self, spec, distribution, device_mesh, initial):
        with distribution.scope():
            layers = [keras.Input((spec.widths[0],), dtype=spec.dtype)]
            for i, units in enumerate(spec.widths[1:]):
                layers.append(keras.layers.Dense(
                    units, use_bias=spec.biases[i], activation=spec.activations[i], dtype=spec.dtype, name=f"d{i}",
                    kernel_initializer=ArrayInitializer(initial[f"d{i}/kernel"]),
                    bias_initializer=ArrayInitializer(initial.get(f"d{i}/bias"))))
            model = keras.Sequential(layers)
        model.kdist_distribution = distribution
        return model

    def model_variables(self, model):
        # Keras prefixes paths with the model's name; the suite names variables d<i>/<name>.
        return [("/".join(v.path.split("/")[-2:]), v) for v in model.weights]

    def variable_layout_of(self, variable):
        value = variable.value
        if not isinstance(value, DTensor):
            return (None,) * len(variable.shape), None, value.detach()
        axes = [None] * len(variable.shape)
        for mesh_dim, placement in enumerate(value.placements):
            if placement.is_shard():
                axes[placement.dim] = value.device_mesh.mesh_dim_names[mesh_dim]
        return tuple(axes), tuple(value.placements), value.to_local().detach()

    def read(self, model, variable, how):
        if how == "numpy":
            return variable.numpy()
        if how == "get_weights" and model is not None:
            return model.get_weights()[[id(w) for w in model.weights].index(id(variable))]
        return keras.ops.convert_to_numpy(variable)

    def make_variable(self, distribution, device_mesh, spec, initial):
        differentiable = initial.dtype.is_floating_point or initial.dtype.is_complex
        with distribution.scope():
            return keras.Variable(ArrayInitializer(initial), shape=spec.shape, dtype=spec.dtype,
                                  trainable=spec.trainable and differentiable, name=spec.path)

    def assign(self, variable, value, how):
        if how == "set_weights":
            holder = keras.layers.Layer()
            holder.held = variable  # tracked: holder.weights == [variable]
            holder.set_weights([np.asarray(value)])
        elif how == "assign_add":
            variable.assign_add(value)
        else:
            variable.assign(value)

    def train(self, model, spec, x, y):
        optimizer = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[spec.optimizer]
        with model.kdist_distribution.scope():
            model.compile(optimizer=optimizer(learning_rate=spec.learning_rate), loss="mse")
            x, y = x.numpy(), y.numpy()
            if spec.entry == "fit":
                history = model.fit(x, y, batch_size=len(x), epochs=spec.steps, shuffle=False, verbose=0)
                return history.history["loss"]
            return [float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0]) for _ in range(spec.steps)]

    def iterations(self, model):
        return model.optimizer.iterations

    def scope_matmul(self, model, x):
        with model.kdist_distribution.scope():
            return keras.ops.matmul(x, model.weights[0])


class ArrayInitializer(keras.initializers.Initializer):
    """Initial values given by the harness, through Keras' own initializer path."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        value = self.value if self.value is not None else torch.zeros(shape)
        return keras.ops.cast(keras.ops.convert_to_tensor(value.to(torch.float64).numpy()
                                                          if not value.is_complex() else value.numpy()), dtype)
