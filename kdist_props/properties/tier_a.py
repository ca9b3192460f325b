"""Rank-side bodies of the Tier A clauses (DESIGN.md §3): build, call the target, observe."""

import torch
from torch.distributed.tensor import DTensor

from kdist_props.properties.build import (
    describe_layout,
    describe_placements,
    full_value,
    harness_dtensor,
    keras_layout,
    keras_mesh,
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
