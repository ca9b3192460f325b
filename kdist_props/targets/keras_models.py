"""The `keras` target's variables and models: real Keras variables, layers,
optimizers and trainers (Tier B), and how the suite reads what Keras returns
(a value the suite cannot read is Unreadable, never a failure)."""

import contextlib
import inspect

import keras
import torch
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.placement_types import Placement

from kdist_props.contract import keras_programs
from kdist_props.targets.base import Unreadable, Unsupported


OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "rmsprop": keras.optimizers.RMSprop}


class KerasModels:
    """Tier B hooks of KerasTarget (targets/keras.py)."""

    def build_model(self, spec, distribution, device_mesh, initial):
        with distribution.scope():
            model = self.build_undistributed_model(spec, initial)
        model.kdist_distribution = distribution
        return model

    def build_undistributed_model(self, spec, initial):
        # With no scope of its own: under the caller's distribution scope, or none.
        layers = [keras.Input((spec.widths[0],), dtype=spec.dtype)]
        for i, units in enumerate(spec.widths[1:]):
            layers.append(keras.layers.Dense(
                units, use_bias=spec.biases[i], activation=spec.activations[i], dtype=spec.dtype, name=f"d{i}",
                kernel_initializer=ArrayInitializer(initial[f"d{i}/kernel"]),
                bias_initializer=ArrayInitializer(initial.get(f"d{i}/bias"))))
        return keras.Sequential(layers)

    def save_weights(self, model, file):
        model.save_weights(file)

    def load_weights(self, model, file):
        model.load_weights(file)

    def build_initialized_model(self, example, distribution, device_mesh):
        with distribution.scope():
            model = keras_programs.dense_stack(example)
        model.kdist_distribution = distribution
        return model

    def train_batch_norm(self, distribution, x, y):
        with distribution.scope():
            return keras_programs.fit_batch_norm(keras_programs.batch_norm_model(), x.numpy(), y.numpy())

    def evaluate_true_positives(self, distribution, x, y):
        with distribution.scope():
            model = keras_programs.count_model(x.shape[1])
            return keras_programs.evaluate_true_positives(model, x.numpy(), y.numpy())

    def model_variables(self, model):
        # Keras prefixes paths with the model's name; the suite names variables d<i>/<name>.
        return [("/".join(v.path.split("/")[-2:]), v) for v in model.weights]

    def variable_layout_of(self, variable):
        value = tensor_of(variable.value, "keras.Variable.value")
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

    def get_weights(self, model):
        return model.get_weights()

    def make_variable(self, distribution, device_mesh, spec, initial):
        explicit = {}
        if spec.preassigned is not None:
            explicit["layout"] = keras.distribution.TensorLayout(list(spec.preassigned), device_mesh)
            require_layout_argument()
        with distribution.scope():
            return keras.Variable(ArrayInitializer(initial), shape=spec.shape, dtype=spec.dtype,
                                  trainable=spec.trainable, name=spec.path, **explicit)

    def make_explicit_variable(self, distribution, layout, initial, spec):
        # The value itself, as users write keras.Variable(x, layout=...), not an initializer.
        require_layout_argument()
        with scope_of(distribution):
            return keras.Variable(initial, dtype=spec.dtype, trainable=spec.trainable, name=spec.path, layout=layout)

    def variable_value(self, variable):
        return tensor_of(variable.value, "keras.Variable.value")

    def assign(self, variable, value, how):
        if how == "set_weights":
            holder = keras.layers.Layer()
            holder.held = variable  # tracked: holder.weights == [variable]
            holder.set_weights([keras.ops.convert_to_numpy(value)])  # numpy has no bfloat16 of its own
        else:
            {"assign": variable.assign, "assign_add": variable.assign_add, "assign_sub": variable.assign_sub}[how](value)

    def train(self, model, spec, x, y):
        with model.kdist_distribution.scope():
            # Created in the scope, as its iterations variable is.
            optimizer = OPTIMIZERS[spec.optimizer](learning_rate=spec.learning_rate, weight_decay=spec.weight_decay,
                                                   clipnorm=spec.clipnorm)
            # A compiled metric as a user has one: its state is reduced across
            # ranks on the same path as the loss tracker's.
            model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError(reduction=spec.loss_reduction),
                          metrics=["mean_squared_error"])
            if spec.data_kind == "numpy":
                x, y = x.numpy(), y.numpy()
            if spec.entry == "fit":
                history = model.fit(x, y, batch_size=len(x), epochs=spec.steps, shuffle=False, verbose=0)
                return history.history["loss"]
            # With a metric compiled, train_on_batch returns [loss, metric].
            return [float(model.train_on_batch(x, y)[0]) for _ in range(spec.steps)]

    def freeze_layers(self, model, layers):
        for i in layers:
            model.get_layer(f"d{i}").trainable = False

    def iterations(self, model):
        return model.optimizer.iterations

    def scope_matmul(self, model, x):
        with model.kdist_distribution.scope():
            return keras.ops.matmul(x, model.weights[0])

    def variable_matmul(self, distribution, x, variable):
        with scope_of(distribution):
            return keras.ops.matmul(x, variable)



def scope_of(distribution):
    """The distribution's scope, or no scope at all for None."""
    return distribution.scope() if distribution is not None else contextlib.nullcontext()


def require_layout_argument():
    if "layout" not in inspect.signature(keras.Variable.__init__).parameters:
        raise Unsupported(f"keras {keras.__version__}: keras.Variable has no layout argument")


def found(value):
    return f"{type(value).__module__}.{type(value).__qualname__} {value!r:.120}"


def placements_of(placements, source):
    """torch placements, or Unreadable when `source` gave something else."""
    if isinstance(placements, (tuple, list)) and all(isinstance(p, Placement) for p in placements):
        return tuple(placements)
    raise Unreadable(f"{source} returned {found(placements)}, not torch placements")


def tensor_of(value, source):
    """A torch tensor (DTensor or plain), or Unreadable when `source` gave something else."""
    if isinstance(value, torch.Tensor):
        return value
    raise Unreadable(f"{source} returned {found(value)}, not a torch tensor")


class ArrayInitializer(keras.initializers.Initializer):
    """Initial values given by the harness, through Keras' own initializer path."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        value = self.value if self.value is not None else torch.zeros(shape)
        return keras.ops.cast(keras.ops.convert_to_tensor(value.to(torch.float64).numpy()
                                                          if not value.is_complex() else value.numpy()), dtype)
