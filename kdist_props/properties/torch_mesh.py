"""torch DeviceMesh construction that reuses process groups.

Each new 2-D or 3-D torch DeviceMesh creates process groups, and with gloo a
group costs a rendezvous of every rank. Properties draw many meshes that
differ only in axis names, so both the harness and the reference build the
groups once per (device type, shape, rank layout) and name the axes with
DeviceMesh.from_group.
"""

import torch
from torch.distributed.device_mesh import DeviceMesh

_by_layout = {}


def build_mesh(device_type, ranks, axis_names):
    """A DeviceMesh over `ranks` (a nested list / tensor giving the mesh layout)."""
    ranks = torch.as_tensor(ranks)
    key = (device_type, tuple(ranks.shape), tuple(ranks.flatten().tolist()))
    if key not in _by_layout:
        _by_layout[key] = DeviceMesh(device_type, ranks)
    unnamed = _by_layout[key]
    groups = [unnamed.get_group(dim) for dim in range(unnamed.ndim)]
    try:
        return DeviceMesh.from_group(groups if len(groups) > 1 else groups[0], device_type, mesh=ranks,
                                     mesh_dim_names=tuple(axis_names))
    except ValueError:
        # from_group refuses a 1-D mesh whose order differs from its group's;
        # such a mesh gets groups of its own.
        return DeviceMesh(device_type, ranks, mesh_dim_names=tuple(axis_names))
