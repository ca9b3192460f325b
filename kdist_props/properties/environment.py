"""Rank-side bodies that probe torch itself, with no target: what they find
goes to the report's environment section, never to a target's cells."""

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Shard, distribute_tensor

from kdist_props.contract.specs import GatherObservation, PermutedGatherExample
from kdist_props.contract.values import tensor_from


def permuted_mesh_gather(ctx, example: PermutedGatherExample) -> GatherObservation:
    """Shard a tensor over a mesh in another order than the ranks', gather it back."""
    mesh = DeviceMesh(ctx.device, torch.tensor(example.mesh.ranks), mesh_dim_names=example.mesh.axis_names)
    # Every rank holds the whole value and keeps its own chunk (no scatter from
    # a source rank), so only the gather is probed.
    dtensor = distribute_tensor(tensor_from(example.tensor).to(ctx.device), mesh, [Shard(0)], src_data_rank=None)
    return GatherObservation(local=dtensor.to_local().cpu(), full=dtensor.full_tensor().cpu())
