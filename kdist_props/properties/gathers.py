"""Gathering DTensors whatever their dtype.

gloo and NCCL refuse collectives of int16, uint16 and uint32. What the
harness observes, and what the reference computes, must not depend on which
dtypes the communication backend moves: such tensors travel widened to a
dtype that holds every one of their values, and come back narrowed, an exact
round trip. (A target's own collectives are not helped: where they meet the
limitation, the pool proves it with a probe and reports it apart.)
"""

import torch
from torch.distributed.tensor import DTensor, Replicate

WIDER = {torch.int16: torch.int32, torch.uint16: torch.int32, torch.uint32: torch.int64}


def replicated(x):
    """x gathered onto every rank (differentiably for floats), if it is a DTensor."""
    if not isinstance(x, DTensor):
        return x
    return redistributed(x, x.device_mesh, [Replicate()] * x.device_mesh.ndim)


def redistributed(x, mesh, placements):
    """DTensor x laid out anew by `placements` on `mesh` (differentiably for floats)."""
    wide = WIDER.get(x.dtype)
    if wide is None:
        return x.redistribute(mesh, placements)
    return x.to(wide).redistribute(mesh, placements).to(x.dtype)


def full_tensor(x):
    """The global value of x as a plain tensor (x itself when it is not a DTensor)."""
    if not isinstance(x, DTensor):
        return x
    wide = WIDER.get(x.dtype)
    return x.full_tensor() if wide is None else x.to(wide).full_tensor().to(x.dtype)
