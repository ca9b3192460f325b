"""Turning plain example data into Keras and torch objects on a rank, and
torch results back into plain observations. Independent of the target, so
that a broken target cannot break the inputs of another clause."""

import keras
import torch
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from kdist_props.torch_mesh import build_mesh
from kdist_props.values import is_float_or_complex, tensor_from

def device_type(ctx):
    return "gpu" if ctx.device == "cuda" else "cpu"


def keras_mesh_args(ctx, spec):
    return tuple(spec.shape), list(spec.axis_names), spec.devices(device_type(ctx))


def keras_mesh(ctx, spec, args=None):
    shape, axis_names, devices = args or keras_mesh_args(ctx, spec)
    return keras.distribution.DeviceMesh(shape, axis_names, devices=devices)


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
    axes = operand.axes
    placements = [Shard(axes.index(n)) if n in axes else Replicate() for n in mesh_spec.axis_names]
    return distribute_tensor(value, harness_mesh(ctx, mesh_spec), placements, src_data_rank=None)


def full_value(x):
    """The global value as a plain CPU tensor (DTensors gathered)."""
    if isinstance(x, DTensor):
        x = x.full_tensor()
    return x.detach().cpu()


def local_value(x):
    return (x.to_local() if isinstance(x, DTensor) else x).detach().cpu()


def describe_placements(placements):
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
    if layout is None:
        return None
    mesh = layout.device_mesh
    return {
        "type": type(layout).__name__,
        "axes": tuple(layout.axes),
        "mesh": None if mesh is None else (tuple(mesh.shape), tuple(mesh.axis_names), tuple(mesh.devices.flatten().tolist())),
    }


def describe_backend_mesh(mesh):
    return {
        "shape": tuple(mesh.mesh.shape),
        "dim_names": tuple(mesh.mesh_dim_names or ()),
        "ranks": mesh.mesh.tolist(),
        "device_type": mesh.device_type,
    }
