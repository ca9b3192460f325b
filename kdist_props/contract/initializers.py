"""What Keras' initializers promise, from the GLOBAL shape alone, in plain
torch (variable.init): the value of a deterministic initializer, and the bound
on every value of a random one. A distribution must not change either: an
initializer that ran on a shard's shape shows as another value or a bound
computed from other fans."""

import math

import torch

# Deterministic initializers, by the name the Keras program gives them
# (kdist_props.contract.keras_programs); "arange" is a custom initializer of
# the suite, a value that differs at every position, so that a shard in the
# wrong place shows.
DETERMINISTIC = {
    "ones": lambda shape: torch.ones(shape),
    "identity": lambda shape: torch.eye(*shape),
    "arange": lambda shape: torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape),
}
KERNEL_ONLY = ("identity",)  # keras.initializers.Identity takes 2-D shapes only


def fans(shape):
    """keras.initializers' compute_fans for the 1-D and 2-D shapes of a dense stack."""
    return (shape[0], shape[0]) if len(shape) == 1 else (shape[0], shape[1])


# Random initializers: the largest |value| each can give, from Keras' documented
# formulas (uniform limits; truncated_normal cuts at two standard deviations).
RANDOM_BOUNDS = {
    "random_uniform": lambda shape: 0.05,
    "truncated_normal": lambda shape: 2 * 0.05,
    "glorot_uniform": lambda shape: math.sqrt(6 / sum(fans(shape))),
    "he_uniform": lambda shape: math.sqrt(6 / fans(shape)[0]),
    "lecun_uniform": lambda shape: math.sqrt(3 / fans(shape)[0]),
}
RANDOM = tuple(RANDOM_BOUNDS)
# A float32 draw is the bound rounded to float32, then scaled and shifted
# (one rounding each): three float32 ulps above the exact bound.
BOUND_ULPS = 3


def is_random(name):
    return name in RANDOM_BOUNDS


def expected_value(name, shape):
    """A deterministic initializer's float32 value at the global shape."""
    return DETERMINISTIC[name](tuple(shape)).to(torch.float32)


def float32_bound(name, shape):
    """The largest float32 |value| initializer `name` may give at the global `shape`."""
    bound = torch.tensor(RANDOM_BOUNDS[name](tuple(shape)), dtype=torch.float32)
    for _ in range(BOUND_ULPS):
        bound = torch.nextafter(bound, torch.tensor(math.inf))
    return bound
