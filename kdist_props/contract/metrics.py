"""eval.count-metrics: the data of an evaluation with a count metric (the
oracle is Keras with no distribution: keras_programs.single_process_true_positives)."""

from kdist_props.contract.training import rank_rows
from kdist_props.contract.values import make_values


def global_batch(example):
    """(x, labels): halves of small integers, and labels 0 or 1."""
    x = make_values((example.global_batch, example.features), "float32", example.data_seed) * 0.5
    labels = (make_values((example.global_batch, 1), "float32", example.data_seed + 1) > 0).float()
    return x, labels


def rank_batch(example, rank):
    return rank_rows(example.distribution, rank, global_batch(example))
