"""Rank-side bodies of the Tier B clauses: models and variables under a distribution."""

import os
import tempfile

import numpy as np
import torch

from kdist_props.contract import training
from kdist_props.properties.build import describe_placements, full_value, keras_layout, keras_mesh, local_value
from kdist_props.properties.inputs import target_variable, user_input
from kdist_props.contract.specs import (
    UNDISTRIBUTED,
    AssignExample,
    AssignObservation,
    CheckpointExample,
    ExplicitVariableExample,
    ExplicitVariableObservation,
    FullObservation,
    ModelExample,
    ModelStorageObservation,
    ScopeMatmulExample,
    StoredVariable,
    VariableExample,
    VariableMatmulExample,
)
from kdist_props.contract.values import tensor_from

# Every way a user reads one variable; a model's variables are also read all at once by get_weights.
READS = ("convert_to_numpy", "numpy")


def built_model(ctx, model_spec, distribution_spec, initial=None):
    """A model of `model_spec` built under the distribution, holding `initial`
    (default: training.initial_weights)."""
    mesh = keras_mesh(ctx, distribution_spec.mesh)
    distribution = ctx.target.make_distribution(distribution_spec, mesh)
    if initial is None:
        initial = training.initial_weights(model_spec)
    return ctx.target.build_model(model_spec, distribution, mesh, initial)


def stored(ctx, model, variable):
    axes, placements, local = ctx.target.variable_layout_of(variable)
    return StoredVariable(
        axes=tuple(axes),
        placements=describe_placements(placements),
        local=plain(local),
        reads=tuple((how, plain(ctx.target.read(model, variable, how))) for how in READS),
    )


def model_storage(ctx, ex: ModelExample) -> ModelStorageObservation:
    """variable.scope and variable.read: layout, local shard and reads of every variable, and get_weights."""
    return storage_of(ctx, built_model(ctx, ex.model, ex.distribution))


def checkpoint(ctx, ex: CheckpointExample) -> ModelStorageObservation:
    """model.checkpoint: save_weights from one model, load_weights into another
    of the same layers that holds other values (each initial value plus one);
    the destination's storage and reads. Each rank writes a file of its own."""
    saved = training.initial_weights(ex.model)
    other = {path: value + 1 for path, value in saved.items()}
    with tempfile.TemporaryDirectory() as folder:
        file = os.path.join(folder, "model.weights.h5")
        ctx.target.save_weights(model_holding(ctx, ex, ex.saved_from, saved), file)
        destination = model_holding(ctx, ex, ex.loaded_into, other)
        ctx.target.load_weights(destination, file)
    return storage_of(ctx, destination)


def model_holding(ctx, ex, how, values):
    """A model of ex.model holding `values`, built under ex.distribution or with none (`how`)."""
    if how == UNDISTRIBUTED:
        return ctx.target.build_undistributed_model(ex.model, values)
    return built_model(ctx, ex.model, ex.distribution, values)


def storage_of(ctx, model):
    """Layout, local shard and reads of every variable of `model`, and its get_weights."""
    return ModelStorageObservation(
        variables=tuple((path, stored(ctx, model, v)) for path, v in ctx.target.model_variables(model)),
        weights=tuple(plain(w) for w in ctx.target.get_weights(model)),
    )


def made_variable(ctx, spec):
    """(distribution, variable) of a VariableExample."""
    mesh = keras_mesh(ctx, spec.distribution.mesh)
    return target_variable(ctx, mesh, spec.distribution, spec.variable, tensor_from(spec.initial))


def standalone_variable(ctx, ex: VariableExample) -> StoredVariable:
    """variable.scope and variable.read: a variable created alone, by a LayoutMap or an explicit layout."""
    _, variable = made_variable(ctx, ex)
    return stored(ctx, None, variable)


def plain(value):
    """What a read handed the user (numpy, tensor, DTensor, Keras variable) as a
    CPU tensor, copied (a later assignment must not change what was observed).
    A DTensor counts as what this rank holds: a read that returns one has not
    given the user the full value."""
    if torch.is_tensor(value):
        return local_value(value).clone()
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, which torch cannot import: move the bits
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.as_tensor(array.copy())


def variable_assign(ctx, ex: AssignExample) -> AssignObservation:
    """variable.assign: assign a plain value to a distributed variable and read it back."""
    _, variable = made_variable(ctx, ex.target)
    axes_before, placements_before, _ = ctx.target.variable_layout_of(variable)
    ctx.target.assign(variable, plain_value(ex.value, ex.value_kind), ex.how)
    axes_after, placements_after, _ = ctx.target.variable_layout_of(variable)
    return AssignObservation(
        layout_kept=(tuple(axes_before), placements_before) == (tuple(axes_after), placements_after),
        full=plain(ctx.target.read(None, variable, "convert_to_numpy")),
    )


def plain_value(spec, kind):
    value = tensor_from(spec)
    if kind == "numpy":  # numpy has no bfloat16: such values stay tensors
        return value.numpy() if value.dtype != torch.bfloat16 else value
    if kind == "python":
        return value.item()
    return value


def scope_matmul(ctx, ex: ScopeMatmulExample) -> FullObservation:
    """ops.scope: keras.ops.matmul of a plain input with the first (sharded) kernel."""
    model = built_model(ctx, ex.model, ex.distribution)
    return FullObservation(full_value(ctx.target.scope_matmul(model, tensor_from(ex.x))))


def variable_matmul(ctx, ex: VariableMatmulExample) -> FullObservation:
    """ops.scope: keras.ops.matmul of a plain input with a standalone (laid out) variable."""
    distribution, variable = made_variable(ctx, ex.target)
    return FullObservation(full_value(ctx.target.variable_matmul(distribution, tensor_from(ex.x), variable)))


def explicit_variable(ctx, ex: ExplicitVariableExample) -> ExplicitVariableObservation:
    """variable.explicit-layout: a variable made with a layout, with or without a
    distribution; its storage, then layout and value after each assignment, then matmul."""
    mesh = keras_mesh(ctx, ex.mesh)
    distribution = ctx.target.make_distribution(ex.distribution, mesh) if ex.distribution else None
    initial = user_input(ctx, mesh, ex.mesh, ex.initial, tensor_from(ex.initial.tensor))
    variable = ctx.target.make_explicit_variable(distribution, keras_layout(ex.variable.preassigned, mesh), initial,
                                                 ex.variable)
    made = stored(ctx, None, variable)
    after_steps = []
    for step in ex.steps:
        ctx.target.assign(variable, plain_value(step.value, step.value_kind), step.how)
        axes, placements, _ = ctx.target.variable_layout_of(variable)
        after_steps.append((tuple(axes), describe_placements(placements),
                            plain(ctx.target.read(None, variable, "convert_to_numpy"))))
    product = None
    if ex.x is not None:
        product = full_value(ctx.target.variable_matmul(distribution, tensor_from(ex.x), variable))
    return ExplicitVariableObservation(made, tuple(after_steps), product)
