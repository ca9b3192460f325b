"""Keras programs of Tier B that the driver also runs with no distribution,
as the single-process oracle ("the same program, the same Keras, one
process"). The keras target runs the same function under a distribution
scope on every rank, so both sides run one program."""

import math

import keras
import torch

from kdist_props.contract.batch_norm import MOMENTUM



class Arange(keras.initializers.Initializer):
    """0, 1, 2, ... in row-major order: a deterministic custom initializer whose
    every position holds another value."""

    def __call__(self, shape, dtype=None):
        return keras.ops.reshape(keras.ops.arange(math.prod(shape), dtype=dtype), shape)


def initializer_objects(example):
    """keras.utils.set_random_seed(seed) (unless the program never seeds),
    then one Keras initializer per variable, created in order: a random
    initializer without a seed draws its own from Python's random module when
    created, so seed and order fix every value."""
    if example.seed is not None:
        keras.utils.set_random_seed(example.seed)
    return [Arange() if name == "arange" else keras.initializers.get(name) for name in example.initializers]


def dense_stack(example):
    """The dense stack of an InitExample, as a user writes it; under whatever
    distribution scope the caller opened."""
    spec = example.model
    paths = [path for path, _ in spec.variable_shapes()]
    initializers = dict(zip(paths, initializer_objects(example)))
    layers = [keras.Input((spec.widths[0],), dtype=spec.dtype)]
    for i, units in enumerate(spec.widths[1:]):
        layers.append(keras.layers.Dense(
            units, use_bias=spec.biases[i], activation=spec.activations[i], dtype=spec.dtype, name=f"d{i}",
            kernel_initializer=initializers[f"d{i}/kernel"], bias_initializer=initializers.get(f"d{i}/bias")))
    return keras.Sequential(layers)


def single_process_values(example):
    """{path: value} of the model of a seeded `example` built in this process
    with no distribution (the driver never sets one)."""
    assert example.seed is not None, "an unseeded program has no single-process value to compare with"
    assert keras.distribution.distribution() is None, "the single-process oracle must run with no distribution"
    model = dense_stack(example)
    paths = [path for path, _ in example.model.variable_shapes()]
    return {path: torch.from_numpy(keras.ops.convert_to_numpy(v).copy()) for path, v in zip(paths, model.weights)}


def batch_norm_model():
    """Input -> BatchNormalization -> Dense(1), as a user writes it (the input width comes with the first batch)."""
    return keras.Sequential([keras.layers.BatchNormalization(momentum=MOMENTUM, name="bn"),
                             keras.layers.Dense(1, kernel_initializer="ones", name="out")])


def fit_batch_norm(model, x, y):
    """One SGD step of fit on (x, y); the layer's (moving_mean, moving_variance) after it."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.125), loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    layer = model.get_layer("bn")
    return layer.moving_mean, layer.moving_variance


def single_process_batch_norm(x, y):
    """The oracle of train.batch-norm: the same program on the global batch in this process, no distribution."""
    assert keras.distribution.distribution() is None, "the single-process oracle must run with no distribution"
    return tuple(torch.from_numpy(keras.ops.convert_to_numpy(v).copy())
                 for v in fit_batch_norm(batch_norm_model(), x.numpy(), y.numpy()))


def count_model(features):
    """Input -> Dense "d0" (1 unit, sigmoid, kernel of ones): a prediction above 0.5 is a positive row sum."""
    return keras.Sequential([keras.Input((features,)),
                             keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones", name="d0")])


def evaluate_true_positives(model, x, y):
    """What evaluate's logs hold for TruePositives on (x, y) in one batch (as they hold it)."""
    model.compile(loss="mse", metrics=[keras.metrics.TruePositives(name="tp")])
    return model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["tp"]


def single_process_true_positives(features, x, y):
    """The oracle of eval.count-metrics: the same program on the global batch in this process, no distribution."""
    assert keras.distribution.distribution() is None, "the single-process oracle must run with no distribution"
    return float(evaluate_true_positives(count_model(features), x.numpy(), y.numpy()))
