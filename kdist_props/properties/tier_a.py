"""Rank-side bodies of the Tier A clauses (DESIGN.md §3): build, call the target, observe."""

import gc

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from kdist_props.properties.build import (
    describe_backend_mesh,
    describe_layout,
    describe_placements,
    full_value,
    harness_dtensor,
    keras_layout,
    keras_mesh,
    keras_mesh_args,
    keras_variable,
    local_value,
)
from kdist_props.values import local_batch, tensor_from


def variable_layout(ctx, ex):
    """layout.variable: the layout a distribution gives a variable."""
    mesh = keras_mesh(ctx, ex["distribution"].mesh)
    distribution = ctx.target.make_distribution(ex["distribution"], mesh)
    variable = keras_variable(ex["variable"])
    if ex["variable"].preassigned is not None:
        variable._layout = keras_layout(ex["variable"].preassigned, mesh)
    return describe_layout(ctx.target.variable_layout(distribution, variable))


def layout_placements(ctx, ex):
    """layout.placements: a layout's torch placements, or the ValueError it raises."""
    mesh = keras_mesh(ctx, ex["mesh"])
    try:
        placements = ctx.target.to_placements(keras_layout(ex["axes"], mesh))
    except ValueError as error:
        return {"error": str(error)}
    return {"placements": describe_placements(placements)}


def variable_wrapping(ctx, ex):
    """variable.wrapping: what distributing a variable's value gives back."""
    layout = keras_layout(ex["axes"], keras_mesh(ctx, ex["mesh"]))
    value = ctx.target.distribute_variable(tensor_from(ex["tensor"]), layout, ex["trainable"])
    return {
        "is_parameter": isinstance(value, torch.nn.Parameter),
        "requires_grad": value.requires_grad,
        "full": full_value(value),
    }


def mesh_step(ctx, ex):
    """mesh.identity, one step of the state machine, on meshes kept in ctx.state."""
    meshes = ctx.state.setdefault("meshes", {})
    op, name = ex["op"], ex["name"]
    if op == "start":  # a new run: no mesh, and a target with no cache from earlier runs
        meshes.clear()
        ctx.fresh_target()
    elif op == "create":
        meshes[name] = keras_mesh(ctx, ex["mesh"])
    elif op == "replace":
        # Freed and allocated back to back (arguments built first), the new mesh
        # takes the old one's address, hence its id(): the case an id()-keyed
        # cache gets wrong.
        args = keras_mesh_args(ctx, ex["mesh"])
        del meshes[ex["old"]]
        meshes[name] = keras_mesh(ctx, ex["mesh"], args)
    elif op == "drop":
        del meshes[name]
    elif op == "collect":
        gc.collect()
    elif op == "convert":
        return describe_backend_mesh(ctx.target.to_backend_mesh(meshes[name]))
    return None


def process_group_count():
    # torch has no public count of live process groups; pg_map is the registry.
    return len(dist.distributed_c10d._world.pg_map)


def mesh_reuse(ctx, ex):
    """mesh.reuse: groups created by converting an equal configuration a second time."""
    first = ctx.target.to_backend_mesh(keras_mesh(ctx, ex["mesh"]))
    before = process_group_count()
    second = ctx.target.to_backend_mesh(keras_mesh(ctx, ex["mesh"]))
    return {
        "new_groups": process_group_count() - before,
        "same_mesh": describe_backend_mesh(first) == describe_backend_mesh(second),
    }


def tensor_storage(ctx, ex):
    """tensor.storage: this rank's shard and the full tensor of distribute_tensor."""
    layout = keras_layout(ex["axes"], keras_mesh(ctx, ex["mesh"]))
    dt = ctx.target.distribute_tensor(tensor_from(ex["tensor"]), layout)
    return {
        "is_dtensor": isinstance(dt, DTensor),
        "placements": describe_placements(dt.placements) if isinstance(dt, DTensor) else None,
        "local": local_value(dt),
        "full": full_value(dt),
    }


def data_input(ctx, ex):
    """data.input: the global tensor made of every rank's own batch."""
    mesh = keras_mesh(ctx, ex["mesh"])
    axes = (ex["batch_dim_name"],) + (None,) * (len(ex["batch"].shape) - 1)
    global_batch = ctx.target.distribute_data_input(local_batch(ex["batch"], ctx.rank), keras_layout(axes, mesh),
                                                    ex["batch_dim_name"])
    return {"full": full_value(global_batch)}


def matmul(ctx, ex):
    """ops.matmul: the target's matmul of harness-built operands."""
    a = harness_dtensor(ctx, ex["mesh"], ex["a"])
    b = harness_dtensor(ctx, ex["mesh"], ex["b"])
    result = ctx.target.matmul(a, b)
    return {"full": full_value(result)}
