"""Rank-side bodies of the Tier B clauses: models and variables under a distribution."""

import numpy as np
import torch

from kdist_props import training
from kdist_props.properties.build import describe_placements, full_value, keras_mesh, local_value
from kdist_props.values import tensor_from

READS = ("convert_to_numpy", "numpy", "get_weights")


def built_model(ctx, model_spec, distribution_spec):
    mesh = keras_mesh(ctx, distribution_spec.mesh)
    distribution = ctx.target.make_distribution(distribution_spec, mesh)
    initial = training.initial_weights(model_spec)
    return ctx.target.build_model(model_spec, distribution, mesh, initial)


def model_storage(ctx, ex):
    """variable.scope and variable.read: layout, local shard and every kind of read of each variable."""
    model = built_model(ctx, ex["model"], ex["distribution"])
    observed = {}
    for path, variable in ctx.target.model_variables(model):
        axes, placements, local = ctx.target.variable_layout_of(variable)
        observed[path] = {
            "axes": tuple(axes),
            "placements": describe_placements(placements) if placements is not None else None,
            "local": plain(local),
            "reads": {how: plain(ctx.target.read(model, variable, how)) for how in READS},
        }
    return observed


def plain(value):
    """What a read handed the user (numpy, tensor, DTensor, Keras variable) as a
    CPU tensor. A DTensor counts as what this rank holds: a read that returns
    one has not given the user the full value."""
    if torch.is_tensor(value):
        return local_value(value)
    return torch.as_tensor(np.asarray(value))


def variable_assign(ctx, ex):
    """variable.assign: assign a plain value to a distributed variable and read it back."""
    mesh = keras_mesh(ctx, ex["distribution"].mesh)
    distribution = ctx.target.make_distribution(ex["distribution"], mesh)
    variable = ctx.target.make_variable(distribution, mesh, ex["variable"], tensor_from(ex["initial"]))
    axes_before, placements_before, _ = ctx.target.variable_layout_of(variable)
    ctx.target.assign(variable, plain_value(ex["value"], ex["value_kind"]), ex["how"])
    axes_after, placements_after, _ = ctx.target.variable_layout_of(variable)
    return {
        "layout_kept": (tuple(axes_before), placements_before) == (tuple(axes_after), placements_after),
        "full": plain(ctx.target.read(None, variable, "convert_to_numpy")),
    }


def plain_value(spec, kind):
    value = tensor_from(spec)
    if kind == "numpy":  # numpy has no bfloat16: such values stay tensors
        return value.numpy() if value.dtype != torch.bfloat16 else value
    if kind == "python":
        return value.item()
    return value


def scope_matmul(ctx, ex):
    """ops.scope: keras.ops.matmul of a plain input with the first (sharded) kernel."""
    model = built_model(ctx, ex["model"], ex["distribution"])
    return {"full": full_value(ctx.target.scope_matmul(model, tensor_from(ex["x"])))}
