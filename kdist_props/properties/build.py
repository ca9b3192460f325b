"""Turning plain example data into Keras and torch objects on a rank, and
torch results back into plain observations. Independent of the target, so
that a broken target cannot break the inputs of another clause."""

import keras
import torch
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from kdist_props.contract.specs import LayoutObservation, StorageObservation
from kdist_props.properties.gathers import full_tensor
from kdist_props.properties.torch_mesh import build_mesh
from kdist_props.contract.values import is_float_or_complex, tensor_from

def device_type(ctx):
    return "gpu" if ctx.device == "cuda" else "cpu"


def keras_mesh(ctx, spec):
    return keras.distribution.DeviceMesh(tuple(spec.shape), list(spec.axis_names), devices=spec.devices(device_type(ctx)))


def keras_layout(axes, mesh):
    return keras.distribution.TensorLayout(list(axes), mesh)


def keras_variable(spec):
    # Keras on torch cannot create a trainable int variable at all (Parameter
    # refuses requires_grad); only float/complex variables are made trainable.
    return keras.Variable(
        "zeros",
        shape=spec.shape,
        dtype=spec.dtype,
        trainable=spec.trainable and is_float_or_complex(spec.dtype),
        name=spec.path,
    )


def harness_mesh(ctx, spec):
    return build_mesh(ctx.device, torch.tensor(spec.ranks).reshape(spec.shape), spec.axis_names)


def harness_dtensor(ctx, mesh_spec, operand):
    """The operand as the harness builds it: plain, or a DTensor of its axes."""
    value = tensor_from(operand.tensor).to(ctx.device)
    if not operand.is_distributed:
        return value
    return harness_distribute(ctx, mesh_spec, value, operand.axes)


def harness_distribute(ctx, mesh_spec, value, axes):
    """`value` as a DTensor laid out by `axes`, built by the harness (no target involved)."""
    placements = [Shard(axes.index(n)) if n in axes else Replicate() for n in mesh_spec.axis_names]
    return distribute_tensor(value.to(ctx.device), harness_mesh(ctx, mesh_spec), placements, src_data_rank=None)


def full_value(x):
    """The global value as a plain CPU tensor (DTensors gathered, whatever their dtype)."""
    return full_tensor(x).detach().cpu()


def local_value(x):
    return (x.to_local() if isinstance(x, DTensor) else x).detach().cpu()


def describe_storage(x):
    """What a distribute call gave: DTensor or not, placements, this rank's shard, the whole."""
    distributed = isinstance(x, DTensor)
    return StorageObservation(
        is_dtensor=distributed,
        placements=describe_placements(x.placements if distributed else None),
        local=local_value(x),
        full=full_value(x),
    )


def describe_placements(placements):
    """("S", dim) / ("R",) per mesh axis; None for no placements (a plain tensor)."""
    if placements is None:
        return None
    out = []
    for p in placements:
        if p.is_shard():
            out.append(("S", p.dim))
        elif p.is_replicate():
            out.append(("R",))
        else:
            out.append((type(p).__name__,))
    return tuple(out)


def describe_layout(layout):
    """A Keras TensorLayout as plain data (anything else: only its type name)."""
    if not isinstance(layout, keras.distribution.TensorLayout):
        return LayoutObservation(type(layout).__name__)
    mesh = layout.device_mesh
    described_mesh = None
    if mesh is not None:
        described_mesh = (tuple(mesh.shape), tuple(mesh.axis_names), tuple(mesh.devices.flatten().tolist()))
    return LayoutObservation(type(layout).__name__, tuple(layout.axes), described_mesh)
