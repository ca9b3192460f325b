"""Deterministic tensor values from (shape, dtype, seed), shared by bodies and oracles.

Values are small integers (and, for complex dtypes, small integer parts), so
sums of up to a few hundred products stay exact in every float dtype,
bfloat16 included: a wrong shard or a missing reduction shows as a wrong
number, never as rounding noise.
"""

import numpy as np
import torch

SMALL = 3  # values lie in [-SMALL, SMALL] (unsigned: [0, SMALL])


def torch_dtype(name):
    return getattr(torch, name)


def is_float_or_complex(name):
    dtype = torch_dtype(name)
    return dtype.is_floating_point or dtype.is_complex


def make_values(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    target = torch_dtype(dtype)
    if target == torch.bool:
        ints = rng.integers(0, 2, size=shape)
    elif not target.is_signed and not target.is_floating_point and not target.is_complex:
        ints = rng.integers(0, SMALL + 1, size=shape)
    else:
        ints = rng.integers(-SMALL, SMALL + 1, size=shape)
    values = torch.from_numpy(np.asarray(ints, dtype=np.int64))
    if target.is_complex:
        imag = torch.from_numpy(np.asarray(rng.integers(-SMALL, SMALL + 1, size=shape), dtype=np.int64))
        return torch.complex(values.double(), imag.double()).to(target)
    return values.to(target)


def tensor_from(spec):
    return make_values(spec.shape, spec.dtype, spec.seed)


def local_batch(spec, rank):
    """Rank r's own data batch: the same shape and dtype on every rank, values seeded by rank."""
    return make_values(spec.shape, spec.dtype, spec.seed + rank)
