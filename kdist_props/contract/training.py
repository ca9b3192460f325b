"""Tier B data and the single-process training oracle, in plain torch.

Initial weights and data come from seeds, so every rank and the oracle start
from the same values. The optimizers follow Keras' update rules (Keras' Adam
adds epsilon to sqrt(v), not to sqrt(v_hat) as torch's does).

`train` is the oracle: the exact training run (float64) together with a bound
on how far a float32 implementation of it may land, for each loss and each
weight entry (see error_bounds.py). The bound is computed from the run itself:
a well-conditioned entry gets a tolerance of a few ulps, an ill-conditioned
one (an Adam step on a gradient that rounding can flip) as much as rounding
can really move it, and never more.
"""

import math
from dataclasses import dataclass

import torch

from kdist_props.contract import error_bounds as eb
from kdist_props.contract.values import make_values

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7
RMSPROP_RHO, RMSPROP_EPSILON = 0.9, 1e-7  # Keras' defaults
# The optimizers whose steps the oracle bounds one at a time (train says why).
ONE_STEP_OPTIMIZERS = ("adam", "adamw", "rmsprop")
ACTIVATIONS = {"linear": lambda x: x, "relu": torch.relu, "tanh": torch.tanh}

# A mean's gradient is 2 (p - y) times 1/n, and n reaches it in stages: Keras'
# mean squared error averages over the output axis, then over the batch, and
# DataParallel divides by the world size once more (a "sum" reduction
# multiplies by the rows instead of dividing). Three rounded factors and
# three rounded products: at most 6 roundings per term.
MEAN_ROUNDINGS = 6
# Keras' Adam step (keras/src/optimizers/adam.py, and torch_adam.py, its
# torch form) in float32, apart from alpha: m += (g - m) * (1 - beta_1) is 4
# rounded operations (the constant included), v += (g^2 - v) * (1 - beta_2) is
# 5, and m * alpha / (sqrt(v) + epsilon) is 5 (epsilon included). Each
# multiplies the update by at most (1 + u): relative error gamma(14).
ADAM_ROUNDINGS = 14
# SGD: w - lr * g, the product rounded once (the subtraction is counted by eb.sub).
SGD_ROUNDINGS = 1
# Keras' RMSprop step (rmsprop.py, torch_rmsprop.py) from a zero velocity:
# v = rho * 0 + (1 - rho) * g^2 is 3 rounded operations (the constant included),
# v + epsilon 2 more (epsilon included): the square root halves those 5 and
# rounds once, lr * g and the quotient round once each: relative error gamma(6).
RMSPROP_ROUNDINGS = 6
# Keras' weight decay, w - w * wd * lr: two rounded products (the subtraction is eb.sub's).
WEIGHT_DECAY_ROUNDINGS = 2
# Keras' clip_by_norm, g * clipnorm / max(norm, clipnorm): the product rounds once.
CLIP_ROUNDINGS = 1


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


def rank_batch(spec, rank):
    return rank_rows(spec.distribution, rank, global_batch(spec))


def rank_rows(distribution, rank, tensors):
    """The rows of each global-batch tensor that `rank` feeds: the slice of its position on the batch axis."""
    mesh, batch_axis = distribution.mesh, distribution.batch_dim_name
    per_slice = len(tensors[0]) // mesh.axis_size(batch_axis)
    position = mesh.coordinate(rank)[mesh.axis_names.index(batch_axis)]
    return tuple(t[position * per_slice:(position + 1) * per_slice] for t in tensors)


def forward(model, weights, x):
    for i, activation in enumerate(model.activations):
        x = x @ weights[f"d{i}/kernel"]
        if model.biases[i]:
            x = x + weights[f"d{i}/bias"]
        x = ACTIVATIONS[activation](x)
    return x


def mse(prediction, target, reduction="sum_over_batch_size"):
    """Keras' mean squared error: the mean over the output axis, then over the
    batch ("sum_over_batch_size") or its sum ("sum")."""
    per_row = ((prediction - target) ** 2).mean(-1)
    return per_row.sum() if reduction == "sum" else per_row.mean()


class Optimizer:
    """SGD, Adam, AdamW or RMSprop with Keras' update rules and weight decay,
    on any tensors (plain or DTensor). As in Keras, the caller clips the
    gradients first; each step decays a weight, then updates it."""

    def __init__(self, spec):
        self.name, self.learning_rate, self.weight_decay = spec.optimizer, spec.learning_rate, spec.weight_decay
        self.iterations = 0
        self.moments = {}

    def step(self, weights, grads):
        self.iterations += 1
        for path, grad in grads.items():
            weight = weights[path]
            if self.weight_decay is not None:
                weight = weight - weight * self.weight_decay * self.learning_rate
            weights[path] = weight - self._increment(path, grad)

    def _increment(self, path, grad):
        if self.name == "sgd":
            return self.learning_rate * grad
        zeros = torch.zeros_like(grad)
        if self.name == "rmsprop":
            v = self.moments.get(path, zeros) * RMSPROP_RHO + grad * grad * (1 - RMSPROP_RHO)
            self.moments[path] = v
            return self.learning_rate * grad / torch.sqrt(v + RMSPROP_EPSILON)
        t = self.iterations
        m, v = self.moments.get(path, (zeros, zeros))
        m = m + (grad - m) * (1 - ADAM_BETA_1)
        v = v + (grad * grad - v) * (1 - ADAM_BETA_2)
        self.moments[path] = (m, v)
        alpha = self.learning_rate * math.sqrt(1 - ADAM_BETA_2**t) / (1 - ADAM_BETA_1**t)
        return (m * alpha) / (torch.sqrt(v) + ADAM_EPSILON)


@dataclass(frozen=True)
class ExpectedTraining:
    """The oracle's answer: per step the loss, per path the final weights, each an eb.Bounded."""

    losses: tuple
    weights: dict
    initial: dict

    def surely_moved(self, path):
        """Does the exact run move this variable by more than rounding could explain?"""
        final = self.weights[path]
        return bool(((final.value - self.initial[path].double()).abs() > final.error).any())


def train(spec):
    """Single-process training on the global batch, exact, with float32 error
    bounds, as Keras' optimizers step: clip each gradient, decay each weight,
    update it; the variables of a layer keep their values from the step it is frozen on."""
    if spec.optimizer in ONE_STEP_OPTIMIZERS and spec.steps > 1:
        # After a first step that rounding could flip (|g| within its error bound
        # of 0), a weight is uncertain by ~lr, and every later gradient with it:
        # the bound stays sound but too wide to see an averaging bug.
        raise ValueError(f"the oracle bounds one {spec.optimizer} step only")
    initial = initial_weights(spec.model)
    weights = {path: eb.exact(w) for path, w in initial.items()}
    x, y = (eb.exact(t) for t in global_batch(spec))
    losses = []
    for step in range(spec.steps):
        loss, grads = loss_and_gradients(spec.model, weights, x, y, spec.loss_reduction)
        losses.append(loss)
        weights = {path: w if spec.is_frozen(path, step) else
                   eb.sub(decayed(spec, w), update(spec, clipped(spec, grads[path])))
                   for path, w in weights.items()}
    return ExpectedTraining(tuple(losses), weights, initial)


def clipped(spec, grad):
    """Keras' clip_by_norm of one variable's whole gradient: g * c / max(||g||, c)."""
    if spec.clipnorm is None:
        return grad
    norm = eb.sqrt(eb.total(eb.mul(grad, grad)))
    scaled = eb.scale(grad, spec.clipnorm, CLIP_ROUNDINGS)
    return eb.div(scaled, eb.at_least(norm, spec.clipnorm), floor=spec.clipnorm)


def decayed(spec, weight):
    """The weight after Keras' weight decay, w - w * wd * lr (before the update step)."""
    if spec.weight_decay is None:
        return weight
    return eb.sub(weight, eb.scale(weight, spec.weight_decay * spec.learning_rate, WEIGHT_DECAY_ROUNDINGS))


def update(spec, grad):
    """What the optimizer subtracts from a weight, bounded over the gradient's error interval."""
    if spec.optimizer == "sgd":
        return eb.scale(grad, spec.learning_rate, SGD_ROUNDINGS)
    if spec.optimizer == "rmsprop":
        # The first step from a zero velocity: lr * g / sqrt((1 - rho) g^2 + epsilon).
        def step(g):
            return spec.learning_rate * g / torch.sqrt((1 - RMSPROP_RHO) * g * g + RMSPROP_EPSILON)

        return monotone_step(step, grad, eb.gamma(RMSPROP_ROUNDINGS))
    # Adam's (and AdamW's) first step is lr * g / (|g| + eps') with eps' = epsilon / sqrt(1 - beta_2)
    # (m = (1 - beta_1) g, v = (1 - beta_2) g^2).
    eps = ADAM_EPSILON / math.sqrt(1 - ADAM_BETA_2)

    def step(g):
        return spec.learning_rate * g / (g.abs() + eps)

    return monotone_step(step, grad, eb.gamma(ADAM_ROUNDINGS) + adam_alpha_error(1))


def monotone_step(step, grad, relative):
    """A first adaptive step, increasing in g: over the gradient's interval it
    ranges between its values at the two ends, and the float32 formula adds a
    `relative` error. Near g = 0 its slope is lr / sqrt(epsilon) or more
    (~3e3 lr to ~3e5 lr): this is where rounding noise becomes a step of order
    lr, and the bound says so."""
    value, low, high = step(grad.value), step(grad.value - grad.error), step(grad.value + grad.error)
    spread = torch.maximum(high - value, value - low)
    return eb.Bounded(value, spread + relative * torch.maximum(low.abs(), high.abs()))


def adam_alpha_error(t):
    """Relative error of Keras' float32 alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t).
    Keras takes beta^t as ops.power(float32(beta), t): beta rounded (u), raised to
    t (t u), the power itself within one ulp (2 u); then 1 - beta^t cancels, which
    multiplies that error by beta^t / (1 - beta^t) (999 for beta_2 = 0.999 at t = 1),
    and rounds once more (u). The square root halves a relative error; the
    square root, product and quotient add 3 u."""
    def one_minus_power(beta):
        return (t + 2) * eb.U * beta**t / (1 - beta**t) + eb.U

    return one_minus_power(ADAM_BETA_1) + one_minus_power(ADAM_BETA_2) / 2 + 3 * eb.U


DERIVATIVES = {
    "linear": (lambda z: z, lambda z, out: eb.identity_derivative(z)),
    "relu": (eb.relu, lambda z, out: eb.relu_derivative(z)),
    "tanh": (eb.tanh, lambda z, out: eb.tanh_derivative(out)),
}


def loss_and_gradients(model, weights, x, y, reduction="sum_over_batch_size"):
    """Mean squared error (mse's `reduction`) and its gradient for every weight:
    one forward and one backward pass, as autograd does them, on bounded values."""
    inputs, pre_activations, outputs = [], [], []
    h = x
    for i, activation in enumerate(model.activations):
        inputs.append(h)
        z = eb.matmul(h, weights[f"d{i}/kernel"])
        if model.biases[i]:
            z = eb.add(z, broadcast_rows(weights[f"d{i}/bias"], z))
        h = DERIVATIVES[activation][0](z)
        pre_activations.append(z)
        outputs.append(h)
    diff = eb.sub(h, y)
    # "sum" is the mean over every entry times the rows (exactly: the sum of each row's mean).
    rows = len(diff.value) if reduction == "sum" else 1
    loss = eb.scale(eb.mean(eb.mul(diff, diff), MEAN_ROUNDINGS), rows, 0)
    delta = eb.scale(diff, 2 * rows / diff.value.numel(), MEAN_ROUNDINGS)
    grads = {}
    for i in reversed(range(len(model.activations))):
        delta = eb.mul(delta, DERIVATIVES[model.activations[i]][1](pre_activations[i], outputs[i]))
        grads[f"d{i}/kernel"] = eb.matmul(inputs[i].T, delta)
        if model.biases[i]:
            grads[f"d{i}/bias"] = eb.column_sums(delta)
        delta = eb.matmul(delta, weights[f"d{i}/kernel"].T)
    return loss, grads


def broadcast_rows(bias, like):
    return eb.Bounded(bias.value.expand_as(like.value), bias.error.expand_as(like.error))
