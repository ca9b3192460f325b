"""The reference with one known bug each (DESIGN.md §5). Each names the
clause(s) it must fail; `tox -e selftest` checks that the suite catches it.
Most are the bugs of ../shared/seeds/, written down as code."""

import re
from dataclasses import dataclass, replace

import keras
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, distribute_tensor

from kdist_props.contract.specs import DATA_PARALLEL, MODEL_PARALLEL
from kdist_props.properties.gathers import full_tensor
from kdist_props.properties.torch_mesh import fresh_mesh
from kdist_props.targets.reference import (ReferenceDistribution, ReferenceTarget, matmul_result_dtype,
                                           torch_device_type_and_ranks)
from kdist_props.targets.reference_models import ReferenceVariable


@dataclass(frozen=True)
class Mutant:
    name: str
    target_class: type
    breaks: tuple  # clauses that must catch it
    story: str


class MeshCacheById(ReferenceTarget):
    @staticmethod
    def _mesh_key(device_mesh):
        return id(device_mesh)  # seed 000/002: ids are reused once a mesh is collected


class MeshCacheIgnoresDeviceOrder(ReferenceTarget):
    @staticmethod
    def _mesh_key(device_mesh):
        # The devices as a set: a mesh in another order gets the one cached first.
        devices = frozenset(device_mesh.devices.flatten().tolist())
        return tuple(device_mesh.shape), tuple(device_mesh.axis_names), devices


class MeshCacheIgnoresAxisNames(ReferenceTarget):
    @staticmethod
    def _mesh_key(device_mesh):
        return (tuple(device_mesh.shape), tuple(device_mesh.devices.flatten().tolist()))


class MeshCacheIgnoresShape(ReferenceTarget):
    @staticmethod
    def _mesh_key(device_mesh):
        return (tuple(device_mesh.axis_names), tuple(device_mesh.devices.flatten().tolist()))


class MeshGroupsInRankOrder(ReferenceTarget):
    """torch's own DeviceMesh construction, as Keras' torch backend does it: each
    dim's groups are built with their ranks sorted, so on a mesh whose devices
    are not in rank order gathers concatenate in rank order (wrong values)."""

    @staticmethod
    def _build_mesh(device_mesh):
        device_type, ranks = torch_device_type_and_ranks(device_mesh)
        return DeviceMesh(device_type, ranks, mesh_dim_names=tuple(device_mesh.axis_names))


class MeshNoCache(ReferenceTarget):
    def to_backend_mesh(self, device_mesh):
        """A fresh torch DeviceMesh, with fresh process groups, on every call."""
        return fresh_mesh(*torch_device_type_and_ranks(device_mesh), device_mesh.axis_names)


class MeshPerVariable(MeshNoCache):
    """The worst leaker seen on a Keras branch: a torch DeviceMesh of its own
    for every conversion (MeshNoCache's), so for every variable laid out, with new process
    groups on every dim (a 1-D world mesh too). Like Keras, it lays out every
    model variable (DataParallel ones too, replicated) and the optimizer's
    slot variables: 13 meshes for a two-layer model with biases, so 13 groups
    on a 1-D mesh and 26 on a 2-D one. At world size 2 that branch left 4.4
    groups and 13 threads per example. Results stay right; only mesh.reuse
    sees the groups."""

    SLOTS_PER_VARIABLE = 2  # Keras' Adam: a momentum and a velocity, laid out like their variable

    def build_model(self, spec, distribution, device_mesh, initial):
        if distribution.spec.kind == DATA_PARALLEL:  # the reference keeps these plain
            for _ in initial:
                self.to_backend_mesh(device_mesh)
        return super().build_model(spec, distribution, device_mesh, initial)

    def train(self, model, spec, x, y):
        if model.optimizer is None:  # the optimizer's first step builds its slots
            for _ in range(self.SLOTS_PER_VARIABLE * len(model.variables)):
                self.to_backend_mesh(model.distribution.device_mesh)
        return super().train(model, spec, x, y)


class ParameterWrapsInt(ReferenceTarget):
    def distribute_variable(self, value, layout, trainable):
        return torch.nn.Parameter(self._distribute(value, layout), requires_grad=trainable)  # seed 002


class ScalarLayoutNone(ReferenceTarget):
    def variable_layout(self, distribution, variable):
        if len(variable.shape) == 0:
            return None  # seed 000/001: "returns None or an empty layout"
        return super().variable_layout(distribution, variable)


class ScalarLayoutWrongRank(ReferenceTarget):
    def variable_layout(self, distribution, variable):
        if len(variable.shape) == 0:
            return keras.distribution.TensorLayout([None], distribution.device_mesh)
        return super().variable_layout(distribution, variable)


class MatmulNoPromotion(ReferenceTarget):
    def matmul(self, a, b):
        dtype = matmul_result_dtype(a.dtype, b.dtype)
        compute = torch.float32 if dtype == torch.bool else dtype
        return torch.matmul(a.to(compute), b.to(compute)).to(dtype)  # seed 002: mixed Tensor and DTensor


class MatmulPromotesWrongMesh(ReferenceTarget):
    @staticmethod
    def _promote(x, other):
        if isinstance(other, DTensor) and not isinstance(x, DTensor):
            mesh = init_device_mesh(other.device_mesh.device_type, (torch.distributed.get_world_size(),))
            return DTensor.from_local(x, mesh, [Replicate()], run_check=False)
        return x


class ShardOffByOne(ReferenceTarget):
    def distribute_tensor(self, value, layout):
        """Shards of n // k rows and the remainder on the last one, not torch.chunk's
        ceil(n / k): an uneven dim (3 rows on 2 ranks: 1 + 2, not 2 + 1) lands wrong."""
        placements = self.to_placements(layout)
        mesh = self.to_backend_mesh(layout.device_mesh)
        local = value
        for mesh_dim, placement in enumerate(placements):
            if placement.is_shard():
                parts, rows = mesh.size(mesh_dim), local.shape[placement.dim]
                sizes = [rows // parts] * (parts - 1) + [rows - (parts - 1) * (rows // parts)]
                local = torch.split(local, sizes, dim=placement.dim)[mesh.get_local_rank(mesh_dim)]
        return DTensor.from_local(local.contiguous(), mesh, placements, run_check=False,
                                  shape=value.shape, stride=value.stride())


class PlacementsAxisOrder(ReferenceTarget):
    def to_placements(self, layout):
        return tuple(reversed(super().to_placements(layout)))


class PlacementsAcceptRepeatedAxis(ReferenceTarget):
    def to_placements(self, layout):
        axes = list(layout.device_mesh.axis_names)
        last_dim = {axis: dim for dim, axis in enumerate(layout.axes) if axis is not None}  # last one wins silently
        unknown = set(last_dim) - set(axes)
        if unknown:
            raise ValueError(f"unknown mesh axis {sorted(unknown)[0]!r}")
        return tuple(super().to_placements(keras.distribution.TensorLayout(
            [axis if last_dim.get(axis) == dim else None for dim, axis in enumerate(layout.axes)],
            layout.device_mesh)))


class ModelParallelWrongShardDim(ReferenceTarget):
    def variable_layout(self, distribution, variable):
        layout = super().variable_layout(distribution, variable)
        return keras.distribution.TensorLayout(list(reversed(layout.axes)), layout.device_mesh)


class IterationsNotScalar(ReferenceTarget):
    def distribute_variable(self, value, layout, trainable):
        if value.ndim == 0:  # "give the scalar a dim so it has a layout"
            value = value.reshape(1)
            layout = keras.distribution.TensorLayout([None], layout.device_mesh)
        return super().distribute_variable(value, layout, trainable)


class DataInputAsGlobal(ReferenceTarget):
    def distribute_data_input(self, local_batch, layout, batch_dim_name):
        return self.distribute_tensor(local_batch, layout)  # treats one rank's batch as the global one


class DpNoGradSync(ReferenceTarget):
    def _sync_gradients(self, grads, spec):
        return grads  # each rank steps on its own slice's gradient


class DpSumLossAveraged(ReferenceTarget):
    def _summed_loss_scale(self, spec):
        return 1  # gradients averaged over ranks, as DDP does, whatever the loss' reduction


class DpClipBeforeSync(ReferenceTarget):
    def _sync_gradients(self, grads, spec):
        # Each rank clips its own slice's gradient by its own norm, then they are averaged.
        return super()._sync_gradients({p: self._clip_by_norm(g, spec.clipnorm) for p, g in grads.items()}, spec)


class WeightDecayDropped(ReferenceTarget):
    def _optimizer(self, spec):
        return super()._optimizer(replace(spec, weight_decay=None))  # AdamW trains as Adam


class SaveLocalShard(ReferenceTarget):
    def _saved_value(self, variable):
        value = variable.value
        return (value.to_local() if isinstance(value, DTensor) else value).detach().clone()  # this rank's shard only


class LoadDropsLayout(ReferenceTarget):
    def _load_variable(self, variable, value):
        variable.value = value.clone()  # the loaded value replaces the DTensor: replicated, layout lost


class CountLoggedAsTensor(ReferenceTarget):
    def evaluate_true_positives(self, distribution, x, y):
        return torch.tensor(super().evaluate_true_positives(distribution, x, y))  # logs left as tensors


class FreezeIgnored(ReferenceTarget):
    def freeze_layers(self, model, layers):
        pass  # trainable = False set after building never reaches the trainer


class DpRank0Batch(ReferenceTarget):
    def train(self, model, spec, x, y):
        x, y = x.clone(), y.clone()
        for tensor in (x, y):
            torch.distributed.broadcast(tensor, src=0)  # everybody trains on rank 0's slice
        return super().train(model, spec, x, y)


class MpLayoutIgnored(ReferenceTarget):
    def _model_axes(self, distribution, path, rank):
        return (None,) * rank


class ReadLocalShard(ReferenceTarget):
    def read(self, model, variable, how):
        value = variable.value
        return value.to_local() if isinstance(value, DTensor) else value


class GetWeightsDropsLast(ReferenceTarget):
    def get_weights(self, model):
        return super().get_weights(model)[:-1]  # one variable short: the rest still read correctly


class AssignIntFails(ReferenceTarget):
    def assign(self, variable, value, how):
        if not (variable.value.dtype.is_floating_point or variable.value.dtype.is_complex):
            raise TypeError(f"cannot assign to a {variable.value.dtype} variable")
        return super().assign(variable, value, how)


class IterationsFloat(ReferenceTarget):
    def iterations(self, model):
        return super().iterations(model).to(torch.float32)


class StaleTrainableList(ReferenceTarget):
    def _gradient_paths(self, model, wanted):
        # The trainable variables as the optimizer first saw them: after a freeze,
        # gradients are paired by position with variables they do not belong to.
        if not hasattr(model, "first_trainable"):
            model.first_trainable = wanted
        return model.first_trainable


class GradMissingBias(ReferenceTarget):
    def _differentiated(self, model):
        return {path for path in super()._differentiated(model) if not path.endswith("/bias")}


class LeakyProcessGroups(ReferenceTarget):
    """As Keras master does: a new process group per mesh conversion, per
    variable and per training step, never freed (gloo keeps ~3 threads each).
    Results stay right; only mesh.reuse sees the groups."""

    def _leak_group(self):
        # Every rank makes the same calls in the same order, as new_group requires.
        torch.distributed.new_group(list(range(torch.distributed.get_world_size())))

    def to_backend_mesh(self, device_mesh):
        self._leak_group()
        return super().to_backend_mesh(device_mesh)

    def build_model(self, spec, distribution, device_mesh, initial):
        for _ in initial:
            self._leak_group()
        return super().build_model(spec, distribution, device_mesh, initial)

    def _step(self, model, spec, x, y):
        self._leak_group()
        return super()._step(model, spec, x, y)


class MatmulHangsOnWideOperands(ReferenceTarget):
    """A collective that rank 0 skips, for some inputs only: every other rank
    waits in it forever when the left operand's last dim is at least 3."""

    def matmul(self, a, b):
        if a.ndim and a.shape[-1] >= 3 and torch.distributed.get_rank() != 0:
            torch.distributed.barrier()
        return super().matmul(a, b)


class ExplicitLayoutNeedsScope(ReferenceTarget):
    def make_explicit_variable(self, distribution, layout, initial, spec):
        if distribution is None:  # the layout is read only under a distribution: a plain, whole value
            return ReferenceVariable(spec.path, full_tensor(self._user_tensor(initial)).detach().clone(), None,
                                     spec.trainable)
        return super().make_explicit_variable(distribution, layout, initial, spec)


class DistributeRefusesNonLeaf(ReferenceTarget):
    def distribute_tensor(self, value, layout):
        if torch.is_tensor(value) and not value.is_leaf:  # torch's distribute_tensor, called as it is
            raise RuntimeError("distribute_tensor should be used to distribute leaf tensors!")
        return super().distribute_tensor(value, layout)


class DistributeRefusesOtherLayout(ReferenceTarget):
    def distribute_tensor(self, value, layout):
        value = self._user_tensor(value)
        if isinstance(value, DTensor) and tuple(value.placements) != self.to_placements(layout):
            raise ValueError(f"Cannot distribute a DTensor with placements {value.placements}: call redistribute")
        return super().distribute_tensor(value, layout)


class DistributeBroadcastsIntoInput(ReferenceTarget):
    def _distribute(self, value, layout):
        if isinstance(value, DTensor):
            return super()._distribute(value, layout)
        # torch's default source rank: replicated dims are broadcast from rank 0 into the caller's own storage.
        return distribute_tensor(value.detach(), self.to_backend_mesh(layout.device_mesh), self.to_placements(layout))


class LayoutMapTupleOnly(ReferenceTarget):
    @staticmethod
    def _layout_map_axes(value):
        if isinstance(value, list):  # only tuples are turned into a TensorLayout
            raise ValueError(f"{value} should be a TensorLayout type, got {type(value)}")
        return ReferenceTarget._layout_map_axes(value)


class PrefixMatchDistribution(ReferenceDistribution):
    def axes_for(self, path, rank):
        for key, axes in self.layout_map:
            if re.match(key, path):  # the first key found at the start of the path, not a full match
                return axes
        return (None,) * rank


class LayoutMapPrefixMatch(ReferenceTarget):
    def layout_map_distribution(self, device_mesh, entries, batch_dim_name):
        layout_map = [(key, self._layout_map_axes(value)) for key, value in entries]
        return PrefixMatchDistribution(MODEL_PARALLEL, device_mesh, layout_map, batch_dim_name)


class DevicesOfThisProcess(ReferenceTarget):
    def list_devices(self):
        return super().list_devices()[:1]  # the devices this process sees, as with no process group


def replicated(distribution, path, shape):
    return all(axis is None for axis in distribution.axes_for(path, len(shape)))


class InitReplicatedPerRank(ReferenceTarget):
    def _initial_value(self, distribution, path, initializer, shape, dtype):
        # Keras master (torch ops/core.py): a replicated layout falls back to
        # the plain per-process initializer, nothing taken from rank 0.
        if replicated(distribution, path, shape):
            return self._initializer_value(distribution, path, initializer, shape, dtype)
        return super()._initial_value(distribution, path, initializer, shape, dtype)


class InitRankSeed(ReferenceTarget):
    def _initial_value(self, distribution, path, initializer, shape, dtype):
        if replicated(distribution, path, shape) and hasattr(initializer, "seed"):
            seeded = type(initializer).from_config({**initializer.get_config(), "seed": initializer.seed + dist.get_rank()})
            return self._initializer_value(distribution, path, seeded, shape, dtype)
        return super()._initial_value(distribution, path, initializer, shape, dtype)


class InitLocalShardShape(ReferenceTarget):
    def _initializer_value(self, distribution, path, initializer, shape, dtype):
        """The initializer runs on the (largest) shard's shape, and every shard holds that draw."""
        mesh = distribution.device_mesh
        local_shape = list(shape)
        for dim, axis in enumerate(distribution.axes_for(path, len(shape))):
            if axis is not None:
                local_shape[dim] = -(-shape[dim] // mesh.shape[list(mesh.axis_names).index(axis)])
        value = super()._initializer_value(distribution, path, initializer, tuple(local_shape), dtype)
        for dim, (size, part) in enumerate(zip(shape, local_shape)):
            value = torch.cat([value] * -(-size // part), dim).narrow(dim, 0, size)
        return value


class BatchNormLocalStatistics(ReferenceTarget):
    def _batch_sum(self, tensor):
        return tensor  # each rank normalises with its own batch's statistics


class CountMetricSummedOverBatchAxis(ReferenceTarget):
    def evaluate_true_positives(self, distribution, x, y):
        # Each rank counts the whole global batch, then the counts are summed
        # over the batch axis as if each had counted its own slice.
        mesh = distribution.device_mesh
        return super().evaluate_true_positives(distribution, x, y) * mesh.shape[
            list(mesh.axis_names).index(distribution.batch_dim_name)]


MUTANTS = {
    m.name: m
    for m in (
        Mutant("mesh-cache-by-id", MeshCacheById, ("mesh.identity",), "backend mesh cache keyed by id()"),
        Mutant("mesh-cache-ignores-device-order", MeshCacheIgnoresDeviceOrder, ("mesh.identity",),
               "backend mesh cache keyed on shape, axis names and the set of devices"),
        Mutant("mesh-cache-ignores-axis-names", MeshCacheIgnoresAxisNames, ("mesh.identity",),
               "backend mesh cache keyed on shape and devices"),
        Mutant("mesh-cache-ignores-shape", MeshCacheIgnoresShape, ("mesh.identity",),
               "backend mesh cache keyed on axis names and devices"),
        Mutant("mesh-groups-in-rank-order", MeshGroupsInRankOrder, ("tensor.storage", "train.equivalence"),
               "torch DeviceMesh(device_type, ranks): groups sorted by rank, not in mesh order"),
        Mutant("save-local-shard", SaveLocalShard, ("model.checkpoint",),
               "save_weights writes each rank's local shard of a sharded variable"),
        Mutant("load-drops-layout", LoadDropsLayout, ("model.checkpoint",),
               "load_weights replaces a distributed variable's value by a plain replicated one"),
        Mutant("count-logged-as-tensor", CountLoggedAsTensor, ("eval.count-metrics",),
               "evaluate's logs hold tensors, not Python floats"),
        Mutant("mesh-no-cache", MeshNoCache, ("mesh.reuse",), "every conversion builds new process groups"),
        Mutant("leaky-process-groups", LeakyProcessGroups, ("mesh.reuse",),
               "a new process group per mesh conversion, variable and training step (Keras master)"),
        Mutant("mesh-per-variable", MeshPerVariable, ("mesh.reuse",),
               "a new torch DeviceMesh, with new process groups, per variable laid out (a Keras branch)"),
        Mutant("matmul-hangs", MatmulHangsOnWideOperands, ("ops.matmul",),
               "ranks but 0 wait in a collective rank 0 skips, when the left operand is 3 wide or more"),
        Mutant("parameter-wraps-int", ParameterWrapsInt, ("variable.wrapping",), "every value becomes a Parameter"),
        Mutant("scalar-layout-none", ScalarLayoutNone, ("layout.variable",), "scalars get no layout"),
        Mutant("scalar-layout-wrong-rank", ScalarLayoutWrongRank, ("layout.variable",), "scalars get a 1-D layout"),
        Mutant("matmul-no-promotion", MatmulNoPromotion, ("ops.matmul", "ops.scope"), "plain operand meets a DTensor"),
        Mutant("matmul-promotes-wrong-mesh", MatmulPromotesWrongMesh, ("ops.matmul",),
               "plain operand promoted onto a fresh 1-D world mesh"),
        Mutant("shard-off-by-one", ShardOffByOne, ("tensor.storage",),
               "uneven dims split floor-first, the remainder on the last shard"),
        Mutant("placements-axis-order", PlacementsAxisOrder, ("layout.placements",), "placements in reverse mesh order"),
        Mutant("placements-accept-repeated-axis", PlacementsAcceptRepeatedAxis, ("layout.placements",),
               "a mesh axis used twice is silently overwritten"),
        Mutant("mp-wrong-shard-dim", ModelParallelWrongShardDim, ("layout.variable",), "layout axes reversed"),
        Mutant("iterations-not-scalar", IterationsNotScalar, ("variable.wrapping", "optimizer.iterations"),
               "scalars stored with shape (1,)"),
        Mutant("data-input-as-global", DataInputAsGlobal, ("data.input",), "a rank's batch taken as the global one"),
        Mutant("dp-no-grad-sync", DpNoGradSync, ("train.equivalence",), "DataParallel without the gradient all-reduce"),
        Mutant("dp-rank0-batch", DpRank0Batch, ("train.equivalence",), "every rank trains on rank 0's slice"),
        Mutant("mp-layout-ignored", MpLayoutIgnored, ("variable.scope",), "variables replicated instead of sharded"),
        Mutant("read-local-shard", ReadLocalShard, ("variable.read",), "reads return only the local shard"),
        Mutant("get-weights-drops-last", GetWeightsDropsLast, ("variable.read",),
               "get_weights lists one variable fewer than the model has"),
        Mutant("assign-int-fails", AssignIntFails, ("variable.assign",), "assigning to an int or bool variable raises"),
        Mutant("iterations-float", IterationsFloat, ("optimizer.iterations",), "iterations is a float"),
        Mutant("freeze-ignored", FreezeIgnored, ("train.equivalence",),
               "layers frozen after the model is built still train"),
        Mutant("stale-trainable-list", StaleTrainableList, ("train.equivalence",),
               "after layers are frozen mid-training, gradients go to the trainable variables of the first step"),
        Mutant("grad-missing-bias", GradMissingBias, ("train.equivalence",), "biases get no gradient"),
        Mutant("dp-sum-loss-averaged", DpSumLossAveraged, ("train.equivalence",),
               "DataParallel averages the ranks' gradients of a loss reduced with \"sum\""),
        Mutant("dp-clip-before-sync", DpClipBeforeSync, ("train.equivalence",),
               "DataParallel clips each rank's gradient by its own norm before the all-reduce"),
        Mutant("weight-decay-dropped", WeightDecayDropped, ("train.equivalence",),
               "the optimizer's weight_decay is dropped"),
        Mutant("explicit-layout-needs-scope", ExplicitLayoutNeedsScope, ("variable.explicit-layout",),
               "keras.Variable(..., layout=...) outside a distribution scope is a plain whole value"),
        Mutant("distribute-refuses-non-leaf", DistributeRefusesNonLeaf, ("tensor.inputs",),
               "distribute_tensor raises on a tensor computed from one that requires grad"),
        Mutant("distribute-refuses-other-layout", DistributeRefusesOtherLayout, ("tensor.inputs",),
               "distribute_tensor raises on a DTensor or variable laid out another way"),
        Mutant("distribute-broadcasts-into-input", DistributeBroadcastsIntoInput, ("tensor.input-unchanged",),
               "replicated dims are broadcast from rank 0 into the caller's tensor"),
        Mutant("layout-map-tuple-only", LayoutMapTupleOnly, ("layoutmap.values",), "a list LayoutMap value raises"),
        Mutant("layout-map-prefix-match", LayoutMapPrefixMatch, ("layoutmap.values",),
               "LayoutMap keys found by re.match, first one wins: prefixes match, ambiguity goes unsaid"),
        Mutant("devices-of-this-process", DevicesOfThisProcess, ("distribution.defaults",),
               "list_devices() and DataParallel() see one process's device only"),
        Mutant("init-replicated-per-rank", InitReplicatedPerRank, ("variable.init",),
               "a replicated variable is initialized by each rank on its own (Keras master's fallback)"),
        Mutant("init-rank-seed", InitRankSeed, ("variable.init",),
               "a replicated variable's random initializer is seeded with seed + rank"),
        Mutant("init-local-shard-shape", InitLocalShardShape, ("variable.init",),
               "the initializer runs on the local shard's shape, not the global one"),
        Mutant("bn-local-batch-stats", BatchNormLocalStatistics, ("train.batch-norm",),
               "BatchNormalization under DataParallel uses each rank's own batch statistics"),
        Mutant("count-metric-summed-over-batch-axis", CountMetricSummedOverBatchAxis, ("eval.count-metrics",),
               "evaluate's count metrics: the global count summed again over the batch axis"),
    )
}
