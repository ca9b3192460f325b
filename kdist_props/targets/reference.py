"""The reference target: Tier A written from the contract, small and strict,
on plain torch DTensor and Keras' own DeviceMesh / TensorLayout classes.
It is the positive control: every property passes on it."""

import re

import keras
import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import kdist_props
from kdist_props.contract.specs import DATA_PARALLEL, MODEL_PARALLEL
from kdist_props.targets.base import Target
from kdist_props.properties.gathers import redistributed, replicated
from kdist_props.targets.reference_batch_norm import ReferenceBatchNorm
from kdist_props.targets.reference_init import ReferenceInitializers
from kdist_props.targets.reference_metrics import ReferenceMetrics
from kdist_props.targets.reference_models import ReferenceModels, ReferenceVariable
from kdist_props.properties.torch_mesh import build_mesh
from kdist_props.contract.values import is_float_or_complex


class ReferenceDistribution:
    def __init__(self, kind, device_mesh, layout_map=(), batch_dim_name=None):
        self.kind = kind
        self.device_mesh = device_mesh
        self.layout_map = tuple(layout_map)  # ((key, axes), ...)
        self.batch_dim_name = batch_dim_name or device_mesh.axis_names[0]

    def axes_for(self, path, rank):
        """The LayoutMap's axes for `path`, as Keras documents LayoutMap: the
        key equal to the path, else the one key that fully matches it as a
        regular expression; replicated when none does."""
        keys = [key for key, _ in self.layout_map]
        matching = [path] if path in keys else [key for key in keys if re.fullmatch(key, path)]
        if len(matching) > 1:
            raise ValueError(f"variable {path!r} matches several LayoutMap keys: {matching}")
        return dict(self.layout_map)[matching[0]] if matching else (None,) * rank


class ReferenceTarget(ReferenceBatchNorm, ReferenceMetrics, ReferenceInitializers, ReferenceModels, Target):
    name = "reference"

    def __init__(self):
        self._backend_meshes = {}  # configuration -> torch DeviceMesh

    def version(self):
        return kdist_props.__version__

    def reset(self):
        keras.distribution.set_distribution(None)

    def make_distribution(self, spec, device_mesh):
        return ReferenceDistribution(spec.kind, device_mesh, spec.layout_map, spec.batch_dim_name)

    def layout_map_distribution(self, device_mesh, entries, batch_dim_name):
        layout_map = [(key, self._layout_map_axes(value)) for key, value in entries]
        return ReferenceDistribution(MODEL_PARALLEL, device_mesh, layout_map, batch_dim_name)

    @staticmethod
    def _layout_map_axes(value):
        """A LayoutMap value's axes: a TensorLayout's, or a tuple or list of them."""
        if isinstance(value, keras.distribution.TensorLayout):
            return tuple(value.axes)
        if isinstance(value, (tuple, list)):
            return tuple(value)
        raise ValueError(f"a LayoutMap value is a TensorLayout, tuple or list, not {type(value).__name__}")

    def list_devices(self):
        device_type = "gpu" if dist.get_backend() == "nccl" else "cpu"
        return [f"{device_type}:{rank}" for rank in range(dist.get_world_size())]

    def default_data_parallel(self):
        devices = self.list_devices()
        mesh = keras.distribution.DeviceMesh((len(devices),), ["batch"], devices=devices)
        return ReferenceDistribution(DATA_PARALLEL, mesh)

    def variable_layout(self, distribution, variable):
        preassigned = getattr(variable, "_layout", None)
        if preassigned is not None:
            return preassigned
        axes = [None] * len(variable.shape)
        if distribution.kind == MODEL_PARALLEL:
            axes = list(distribution.axes_for(variable.path, len(variable.shape)))
        return keras.distribution.TensorLayout(axes, distribution.device_mesh)

    def to_placements(self, layout):
        mesh_axes = list(layout.device_mesh.axis_names)
        used = {}
        for dim, axis in enumerate(layout.axes):
            if axis is None:
                continue
            if axis not in mesh_axes:
                raise ValueError(f"axis {axis!r} of layout {tuple(layout.axes)} is not a mesh axis {tuple(mesh_axes)}")
            if axis in used:
                raise ValueError(f"mesh axis {axis!r} is used twice in layout {tuple(layout.axes)}")
            used[axis] = dim
        return tuple(Shard(used[axis]) if axis in used else Replicate() for axis in mesh_axes)

    def to_backend_mesh(self, device_mesh):
        key = self._mesh_key(device_mesh)
        if key not in self._backend_meshes:
            self._backend_meshes[key] = self._build_mesh(device_mesh)
        return self._backend_meshes[key]

    @staticmethod
    def _mesh_key(device_mesh):
        # The whole configuration (shape, axis names, devices in order with their
        # type), never id(): ids are reused after garbage collection.
        return (tuple(device_mesh.shape), tuple(device_mesh.axis_names), tuple(device_mesh.devices.flatten().tolist()))

    @staticmethod
    def _build_mesh(device_mesh):
        return build_mesh(*torch_device_type_and_ranks(device_mesh), device_mesh.axis_names)

    def _distribute(self, value, layout):
        mesh = self.to_backend_mesh(layout.device_mesh)
        if isinstance(value, DTensor):
            return redistributed(value.detach(), mesh, self.to_placements(layout))
        # Every rank holds the same global value, so each can cut its own shard:
        # no scatter (nothing written into `value`), and no dependence on which
        # dtypes the backend can send.
        return distribute_tensor(value.detach(), mesh, self.to_placements(layout), src_data_rank=None)

    @staticmethod
    def _user_tensor(value):
        """What a user hands over (tensor, numpy array, variable) as a tensor, copying numpy."""
        if isinstance(value, ReferenceVariable):
            return value.value
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
        return value

    def distribute_variable(self, value, layout, trainable):
        """A variable's value laid out by `layout`: a Parameter only when float or complex."""
        tensor = self._distribute(value, layout)
        if is_float_or_complex(str(value.dtype).removeprefix("torch.")):
            return torch.nn.Parameter(tensor, requires_grad=trainable)
        return tensor

    def distribute_tensor(self, value, layout):
        return self._distribute(self._user_tensor(value), layout)

    def distribute_data_input(self, local_batch, layout, batch_dim_name):
        mesh = self.to_backend_mesh(layout.device_mesh)
        placements = self.to_placements(layout)
        global_shape = list(local_batch.shape)
        global_shape[0] *= layout.device_mesh.shape[list(layout.device_mesh.axis_names).index(batch_dim_name)]
        return DTensor.from_local(local_batch, mesh, placements, run_check=False, shape=torch.Size(global_shape),
                                  stride=torch.empty(global_shape, device="meta").stride())

    def matmul(self, a, b):
        a, b = self._promote(a, b), self._promote(b, a)
        dtype = matmul_result_dtype(a.dtype, b.dtype)
        compute = torch.float32 if dtype == torch.bool else dtype
        # Sharded operands, replicated compute: DTensor cannot propagate every
        # sharding through matmul's internal expand/reshape (sharded or broadcast
        # batch dims), and on meshes of three dims its strategy search can run
        # for minutes (torch 2.13); gathering first is always correct and quick.
        return torch.matmul(replicated(a).to(compute), replicated(b).to(compute)).to(dtype)

    @staticmethod
    def _promote(x, other):
        """A plain operand meets a DTensor as a replicated DTensor on the DTensor's mesh."""
        if isinstance(other, DTensor) and not isinstance(x, DTensor):
            mesh = other.device_mesh
            return DTensor.from_local(x, mesh, [Replicate()] * mesh.ndim, run_check=False)
        return x


def torch_device_type_and_ranks(device_mesh):
    """The torch device type of a Keras DeviceMesh and its ranks laid out in its shape."""
    devices = device_mesh.devices.flatten().tolist()
    device_type = devices[0].split(":")[0].replace("gpu", "cuda")
    return device_type, torch.tensor([int(d.split(":")[-1]) for d in devices]).reshape(tuple(device_mesh.shape))


def matmul_result_dtype(a, b):
    """Keras' rule: int8 @ int8 accumulates in int32; otherwise Keras' type promotion."""
    if a == b == torch.int8:
        return torch.int32
    return getattr(torch, keras.backend.result_type(str(a).removeprefix("torch."), str(b).removeprefix("torch.")))

