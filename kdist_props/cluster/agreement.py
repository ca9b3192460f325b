"""Whether two observations are the same, bit for bit (NaN equals NaN), and
whether the ranks agree."""

import numpy as np
import torch

from kdist_props.cluster.errors import RankDesync


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and bytes(a.contiguous().view(torch.uint8).numpy()) == bytes(b.contiguous().view(torch.uint8).numpy())
            if a.numel()
            else a.dtype == b.dtype and a.shape == b.shape
        )
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def disagreeing_ranks(observations):
    """Ranks whose observation differs from rank 0's (empty when all agree)."""
    return [r for r, obs in enumerate(observations) if not same(observations[0], obs)]


def require_agreement(observations):
    """Raise RankDesync unless every rank's observation is the same as rank 0's."""
    differing = disagreeing_ranks(observations)
    if differing:
        raise RankDesync(f"ranks disagree: rank(s) {differing} returned something other than rank 0",
                         {r: repr(observation) for r, observation in enumerate(observations)})
