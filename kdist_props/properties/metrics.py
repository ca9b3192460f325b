"""Rank-side body of `eval.count-metrics`: evaluate with a count metric under a distribution."""

from kdist_props.contract import metrics
from kdist_props.contract.specs import CountMetricExample, CountMetricObservation
from kdist_props.properties.build import keras_mesh


def true_positives(ctx, ex: CountMetricExample) -> CountMetricObservation:
    """What evaluate reports on this rank, fed this rank's slice, and as what type."""
    mesh = keras_mesh(ctx, ex.distribution.mesh)
    distribution = ctx.target.make_distribution(ex.distribution, mesh)
    x, y = metrics.rank_batch(ex, ctx.rank)
    logged = ctx.target.evaluate_true_positives(distribution, x, y)
    return CountMetricObservation(float(logged), f"{type(logged).__module__}.{type(logged).__qualname__}")
