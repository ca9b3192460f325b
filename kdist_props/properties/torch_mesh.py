"""torch DeviceMesh construction whose process groups follow the mesh order.

torch 2.13's `DeviceMesh(device_type, ranks)` builds each mesh dim's groups
with the ranks sorted (and a 1-D mesh over every rank reuses the world
group), so on a mesh whose devices are not in rank order a group rank is not
the mesh coordinate, and every order-sensitive collective (all_gather,
reduce_scatter, scatter, full_tensor) concatenates in rank order: wrong
values (the environment probe `torch-permuted-mesh-gather`). Groups built with
`new_group(ranks, sort_ranks=False)` in mesh order, handed to
`DeviceMesh.from_group`, are right on any device order; the harness and the
reference build every mesh that way.

Each group costs a rendezvous of every rank (and gloo threads), and properties
draw many meshes that differ only in axis names, so the groups are built once
per (device type, rank layout).
"""

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

_groups_by_layout = {}


def build_mesh(device_type, ranks, axis_names):
    """A DeviceMesh over `ranks` (a nested list / tensor giving the mesh layout),
    on the groups built for the same layout before."""
    ranks = torch.as_tensor(ranks)
    key = (device_type, tuple(ranks.shape), tuple(ranks.flatten().tolist()))
    if key not in _groups_by_layout:
        _groups_by_layout[key] = groups_in_mesh_order(ranks)
    return mesh_of_groups(_groups_by_layout[key], device_type, ranks, axis_names)


def fresh_mesh(device_type, ranks, axis_names):
    """A DeviceMesh like build_mesh's on process groups of its own (new on every call)."""
    ranks = torch.as_tensor(ranks)
    return mesh_of_groups(groups_in_mesh_order(ranks), device_type, ranks, axis_names)


def mesh_of_groups(groups, device_type, ranks, axis_names):
    return DeviceMesh.from_group(groups if len(groups) > 1 else groups[0], device_type, mesh=ranks,
                                 mesh_dim_names=tuple(axis_names))


def groups_in_mesh_order(ranks):
    """This rank's group along each dim of the mesh layout `ranks`, whose group
    ranks are the mesh coordinates along that dim. Every rank creates every
    group, in the same order (new_group is collective over the world)."""
    me, mine = dist.get_rank(), []
    for dim in range(ranks.ndim):
        own = None
        for row in ranks.movedim(dim, -1).reshape(-1, ranks.shape[dim]).tolist():
            group = dist.new_group(row, sort_ranks=False)
            if me in row:
                own = group
        mine.append(own)
    return mine
