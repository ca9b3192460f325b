"""train.batch-norm: the data of a BatchNormalization step and how far a
float32 moving statistic may lie from the single-process one (the oracle
itself is Keras with no distribution: keras_programs.single_process_batch_norm)."""


from kdist_props.contract.training import rank_rows
from kdist_props.contract.values import make_values

MOMENTUM = 0.99  # Keras' default: moving = moving * momentum + batch statistic * (1 - momentum)
ULP = 2.0 ** -24  # float32 unit roundoff


def global_batch(example):
    """(x, y) of the whole batch: halves of small integers, so that sums are exact in float32."""
    x = make_values((example.global_batch, example.features), "float32", example.data_seed) * 0.5
    y = make_values((example.global_batch, 1), "float32", example.data_seed + 1) * 0.5
    return x, y


def rank_batch(example, rank):
    return rank_rows(example.distribution, rank, global_batch(example))


def mean_error(example, expected):
    """The batch mean: exact sums, at most two divisions (a mean of per-rank
    means) and one more rounding for the sum of means; then the momentum
    update, two roundings of the result."""
    x, _ = global_batch(example)
    return (1 - MOMENTUM) * 4 * ULP * x.abs().max() + 2 * ULP * expected.abs()


def variance_error(example, expected):
    """The batch variance: each of the N squared deviations from an inexact
    mean and their sum round once (or E[x²] - E[x]² cancels to the same
    order); then the momentum update, two roundings of the result."""
    x, _ = global_batch(example)
    rows = example.global_batch
    return (1 - MOMENTUM) * (rows + 8) * ULP * (x ** 2).max() + 2 * ULP * expected.abs()


def admits(got, expected, error):
    return got.shape == expected.shape and bool(((got.double() - expected.double()).abs() <= error).all())
