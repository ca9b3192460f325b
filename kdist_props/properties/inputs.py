"""Rank-side bodies of tensor.inputs and tensor.input-unchanged, and the inputs
as users hand them over (specs.Source): built from plain values, and observed
(values and the bytes of their whole storage) before and after a call."""

import numpy as np
import torch

from kdist_props.properties.build import describe_storage, harness_distribute, keras_layout, keras_mesh
from kdist_props.contract.specs import (
    MODEL_PARALLEL,
    DistributeExample,
    DistributionSpec,
    InputObservation,
    StorageObservation,
    UnchangedExample,
    VariableSpec,
)
from kdist_props.contract.values import local_batch, tensor_from


def target_variable(ctx, mesh, distribution_spec, spec, initial):
    """(distribution, variable): a variable of `spec` made by the target under `distribution_spec`."""
    distribution = ctx.target.make_distribution(distribution_spec, mesh)
    return distribution, ctx.target.make_variable(distribution, mesh, spec, initial)


def user_input(ctx, mesh, mesh_spec, source, values):
    """`values` (a tensor) handed over as the kind of input `source` names."""
    if source.kind == "leaf":
        return values
    if source.kind == "non-leaf":
        return values.clone().requires_grad_() * 1  # computed from a tensor that requires grad
    if source.kind == "strided":
        # Every other element of a larger storage, the rest ones: a view that is
        # not contiguous, and storage around it that must stay as it is.
        return torch.stack([values, torch.ones_like(values)], dim=-1)[..., 0]
    if source.kind == "numpy":
        return values.numpy()
    if source.kind == "dtensor":
        return harness_distribute(ctx, mesh_spec, values, source.axes)
    if source.kind == "variable":
        # ModelParallel with an explicit layout: the scope under which Keras' torch backend lays variables out.
        distribution = DistributionSpec(MODEL_PARALLEL, mesh_spec, batch_dim_name=mesh_spec.axis_names[0])
        spec = VariableSpec(source.tensor.shape, source.tensor.dtype, path="source", preassigned=source.axes)
        return target_variable(ctx, mesh, distribution, spec, values)[1]
    raise ValueError(f"unknown input kind {source.kind!r}")


def snapshot(x):
    """(values, bytes of the whole storage) of a plain tensor or numpy array, copied."""
    if isinstance(x, np.ndarray):
        root = x
        while isinstance(root.base, np.ndarray):
            root = root.base
        return torch.from_numpy(x.copy()), torch.from_numpy(np.frombuffer(root.tobytes(), dtype=np.uint8).copy())
    x = x.detach()
    storage = torch.empty(0, dtype=torch.uint8, device=x.device).set_(x.untyped_storage())
    return x.clone().cpu(), storage.clone().cpu()


def distribute_input(ctx, ex: DistributeExample) -> StorageObservation:
    """tensor.inputs: distribute_tensor of an input of any kind."""
    mesh = keras_mesh(ctx, ex.mesh)
    x = user_input(ctx, mesh, ex.mesh, ex.source, tensor_from(ex.source.tensor))
    return describe_storage(ctx.target.distribute_tensor(x, keras_layout(ex.axes, mesh)))


def input_unchanged(ctx, ex: UnchangedExample) -> InputObservation:
    """tensor.input-unchanged: the input before and after distribute_tensor or assign."""
    mesh = keras_mesh(ctx, ex.mesh)
    values = local_batch(ex.source.tensor, ctx.rank) if ex.per_rank else tensor_from(ex.source.tensor)
    x = user_input(ctx, mesh, ex.mesh, ex.source, values)
    value_before, storage_before = snapshot(x)
    if ex.into is None:
        ctx.target.distribute_tensor(x, keras_layout(ex.axes, mesh))
    else:
        _, variable = target_variable(ctx, mesh, ex.into.distribution, ex.into.variable, tensor_from(ex.into.initial))
        ctx.target.assign(variable, x, "assign")
    value_after, storage_after = snapshot(x)
    return InputObservation(value_before, value_after, storage_before, storage_after)
