"""Rank-side body of `train.batch-norm`: one fit step of BatchNormalization under a distribution."""

from kdist_props.contract import batch_norm
from kdist_props.contract.specs import BatchNormExample, BatchNormObservation
from kdist_props.properties.build import keras_mesh
from kdist_props.properties.tier_b import plain


def moving_statistics(ctx, ex: BatchNormExample) -> BatchNormObservation:
    """The layer's moving statistics after one step on this rank's slice, as this rank reads them."""
    mesh = keras_mesh(ctx, ex.distribution.mesh)
    distribution = ctx.target.make_distribution(ex.distribution, mesh)
    x, y = batch_norm.rank_batch(ex, ctx.rank)
    mean, variance = ctx.target.train_batch_norm(distribution, x, y)
    return BatchNormObservation(*(plain(ctx.target.read(None, v, "convert_to_numpy")) for v in (mean, variance)))
