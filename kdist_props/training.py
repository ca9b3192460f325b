"""Tier B data and the single-process training oracle, in plain torch.

Initial weights and data come from seeds, so every rank and the oracle start
from the same values. The optimizers follow Keras' update rules (Keras' Adam
adds epsilon to sqrt(v), not to sqrt(v_hat) as torch's does).
"""

import math

import torch

from kdist_props.values import make_values

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7
ACTIVATIONS = {"linear": lambda x: x, "relu": torch.relu, "tanh": torch.tanh}


def initial_weights(model):
    """{path: tensor}: small values, so activations neither saturate nor vanish."""
    return {
        path: make_values(shape, model.dtype, model.seed + i) * 0.25
        for i, (path, shape) in enumerate(model.variable_shapes())
    }


def global_batch(spec):
    """(x, y) of the whole batch, as one process would see it."""
    widths, dtype = spec.model.widths, spec.model.dtype
    x = make_values((spec.global_batch, widths[0]), dtype, spec.data_seed) * 0.5
    y = make_values((spec.global_batch, widths[-1]), dtype, spec.data_seed + 1) * 0.5
    return x, y


def rank_batch(spec, rank, world_size):
    """What rank `rank` feeds: its own slice under DataParallel, everything under ModelParallel."""
    x, y = global_batch(spec)
    if spec.distribution.kind != "DataParallel":
        return x, y
    per_rank = spec.global_batch // world_size
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    return x[part], y[part]


def forward(model, weights, x):
    for i, activation in enumerate(model.activations):
        x = x @ weights[f"d{i}/kernel"]
        if model.biases[i]:
            x = x + weights[f"d{i}/bias"]
        x = ACTIVATIONS[activation](x)
    return x


def mse(prediction, target):
    return ((prediction - target) ** 2).mean()


class Optimizer:
    """SGD or Adam with Keras' update rules, on any tensors (plain or DTensor)."""

    def __init__(self, name, learning_rate):
        self.name, self.learning_rate = name, learning_rate
        self.iterations = 0
        self.moments = {}

    def step(self, weights, grads):
        self.iterations += 1
        t = self.iterations
        for path, grad in grads.items():
            if self.name == "sgd":
                weights[path] = weights[path] - self.learning_rate * grad
                continue
            m, v = self.moments.get(path, (torch.zeros_like(grad), torch.zeros_like(grad)))
            m = m + (grad - m) * (1 - ADAM_BETA_1)
            v = v + (grad * grad - v) * (1 - ADAM_BETA_2)
            alpha = self.learning_rate * math.sqrt(1 - ADAM_BETA_2**t) / (1 - ADAM_BETA_1**t)
            weights[path] = weights[path] - (m * alpha) / (torch.sqrt(v) + ADAM_EPSILON)
            self.moments[path] = (m, v)


def train(spec):
    """(losses per step, final weights) of single-process training on the global batch."""
    weights = initial_weights(spec.model)
    x, y = global_batch(spec)
    optimizer = Optimizer(spec.optimizer, spec.learning_rate)
    losses = []
    for _ in range(spec.steps):
        params = {p: w.detach().requires_grad_(True) for p, w in weights.items()}
        loss = mse(forward(spec.model, params, x), y)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        losses.append(loss.item())
        weights = {p: w.detach() for p, w in params.items()}
        optimizer.step(weights, grads)
    return losses, weights


def training_tolerance(spec):
    """(rtol, atol) for losses and weights after training: each step is two
    passes of dot products of at most max(widths) terms per layer, each term
    adding up to one ulp; errors grow with depth and steps."""
    eps = torch.finfo(getattr(torch, spec.model.dtype)).eps
    terms = max(spec.model.widths) * len(spec.model.activations) * 2 * spec.steps
    return 8 * eps * terms, 8 * eps * terms
