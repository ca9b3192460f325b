"""Rank-side bodies of the Tier A clauses (DESIGN.md §3): build, call the target, observe."""

import torch
from torch.distributed.tensor import DTensor

from kdist_props.properties.build import (
    describe_layout,
    describe_placements,
    describe_storage,
    full_value,
    harness_dtensor,
    keras_layout,
    keras_mesh,
    keras_variable,
)
from kdist_props.contract.specs import (
    DataInputExample,
    FullObservation,
    LayoutObservation,
    MatmulExample,
    PlacementsExample,
    PlacementsObservation,
    StorageExample,
    StorageObservation,
    VariableExample,
    VariableLayoutExample,
    WrappingObservation,
)
from kdist_props.targets.base import Unreadable
from kdist_props.contract.values import local_batch, tensor_from


def variable_layout(ctx, ex: VariableLayoutExample) -> LayoutObservation:
    """layout.variable: the layout a distribution gives a variable."""
    mesh = keras_mesh(ctx, ex.distribution.mesh)
    distribution = ctx.target.make_distribution(ex.distribution, mesh)
    variable = keras_variable(ex.variable)
    if ex.variable.preassigned is not None:
        variable._layout = keras_layout(ex.variable.preassigned, mesh)
    return describe_layout(ctx.target.variable_layout(distribution, variable))


def layout_placements(ctx, ex: PlacementsExample) -> PlacementsObservation:
    """layout.placements: a layout's torch placements, the ValueError it
    raises, or what it returned that the suite cannot read."""
    mesh = keras_mesh(ctx, ex.mesh)
    try:
        placements = ctx.target.to_placements(keras_layout(ex.axes, mesh))
    except ValueError as error:
        return PlacementsObservation(error=str(error))
    except Unreadable as unreadable:
        return PlacementsObservation(unreadable=str(unreadable))
    return PlacementsObservation(placements=describe_placements(placements))


def variable_wrapping(ctx, ex: VariableExample) -> WrappingObservation:
    """variable.wrapping: the torch tensor behind a variable created under a distribution."""
    mesh = keras_mesh(ctx, ex.distribution.mesh)
    distribution = ctx.target.make_distribution(ex.distribution, mesh)
    # The clause says creating never raises: what it raises fails the example
    # with its own type and message (a RankError), not as a parsed observation.
    variable = ctx.target.make_variable(distribution, mesh, ex.variable, tensor_from(ex.initial))
    value = ctx.target.variable_value(variable)
    return WrappingObservation(
        is_parameter=is_parameter(value),
        requires_grad=bool(value.requires_grad),
        full=full_value(value),
    )


def is_parameter(value):
    """An nn.Parameter at either level a branch may put it: around the DTensor
    (isinstance sees through it), or as the DTensor's local tensor."""
    local = getattr(value, "_local_tensor", None) if isinstance(value, DTensor) else None
    return isinstance(value, torch.nn.Parameter) or isinstance(local, torch.nn.Parameter)


def tensor_storage(ctx, ex: StorageExample) -> StorageObservation:
    """tensor.storage: this rank's shard and the full tensor of distribute_tensor."""
    layout = keras_layout(ex.axes, keras_mesh(ctx, ex.mesh))
    return describe_storage(ctx.target.distribute_tensor(tensor_from(ex.tensor), layout))


def data_input(ctx, ex: DataInputExample) -> FullObservation:
    """data.input: the global tensor made of every rank's own batch."""
    mesh = keras_mesh(ctx, ex.mesh)
    axes = (ex.batch_dim_name,) + (None,) * (len(ex.batch.shape) - 1)
    global_batch = ctx.target.distribute_data_input(local_batch(ex.batch, ctx.rank), keras_layout(axes, mesh),
                                                    ex.batch_dim_name)
    return FullObservation(full_value(global_batch))


def matmul(ctx, ex: MatmulExample) -> FullObservation:
    """ops.matmul: the target's matmul of harness-built operands."""
    a = harness_dtensor(ctx, ex.mesh, ex.a)
    b = harness_dtensor(ctx, ex.mesh, ex.b)
    return FullObservation(full_value(ctx.target.matmul(a, b)))
