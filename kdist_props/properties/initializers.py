"""Rank-side body of `variable.init`: a model built under a distribution with Keras' own initializers."""

import random

import numpy as np
import torch

from kdist_props.contract.specs import InitExample, InitObservation
from kdist_props.properties.build import keras_mesh
from kdist_props.properties.training import variable_values


def initial_values(ctx, ex: InitExample) -> InitObservation:
    """Every variable's full value right after the build, as this rank reads it."""
    if ex.seed is None:
        own_random_state(ex.process_entropy, ctx.rank)
    mesh = keras_mesh(ctx, ex.distribution.mesh)
    distribution = ctx.target.make_distribution(ex.distribution, mesh)
    model = ctx.target.build_initialized_model(ex, distribution, mesh)
    return InitObservation(variable_values(ctx, model))


def own_random_state(entropy, rank):
    """The random state of a process of its own, as torchrun starts them
    (seeded from the OS): ranks forked from one fork server share its state,
    which would make a program that never seeds agree across ranks by chance."""
    seed = entropy * 65537 + rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
