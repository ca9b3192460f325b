"""Tier B of the reference target: a plain torch dense stack on DTensor.

DataParallel: parameters are plain replicated tensors, every rank feeds its
own slice, gradients are averaged with an all-reduce (what DDP does).
ModelParallel: parameters are DTensors laid out by the LayoutMap, inputs are
replicated, and DTensor's autograd does the communication.
"""

import math

import keras
import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard

from kdist_props.contract import training
from kdist_props.properties.gathers import full_tensor, replicated
from kdist_props.contract.specs import DATA_PARALLEL, layer_of


class ReferenceVariable:
    def __init__(self, path, value, layout, trainable=True):
        self.path, self.value, self.layout, self.trainable = path, value, layout, trainable

    @property
    def axes(self):
        return tuple(self.layout.axes) if self.layout is not None else (None,) * self.value.ndim


class ReferenceModel:
    def __init__(self, spec, distribution, variables):
        self.spec, self.distribution, self.variables = spec, distribution, variables
        self.optimizer = None


class ReferenceModels:
    """Mixed into ReferenceTarget; uses its Tier A methods."""

    def _keras_layout(self, axes, device_mesh):
        return keras.distribution.TensorLayout(list(axes), device_mesh)

    def build_model(self, spec, distribution, device_mesh, initial):
        variables = []
        for path, value in initial.items():
            if distribution.kind == DATA_PARALLEL:
                variables.append(ReferenceVariable(path, value.clone(), None))
                continue
            layout = self._keras_layout(self._model_axes(distribution, path, value.ndim), device_mesh)
            variables.append(ReferenceVariable(path, self.distribute_tensor(value, layout), layout))
        return ReferenceModel(spec, distribution, variables)

    def build_undistributed_model(self, spec, initial):
        return ReferenceModel(spec, None, [ReferenceVariable(path, value.clone(), None) for path, value in initial.items()])

    def save_weights(self, model, file):
        # The reference's own format: every variable's full value by path.
        torch.save({v.path: self._saved_value(v) for v in model.variables}, file)

    def _saved_value(self, variable):
        """What save_weights writes of a variable: its full value (a mutant writes the local shard)."""
        return full_tensor(variable.value).detach().clone()

    def load_weights(self, model, file):
        saved = torch.load(file)
        for variable in model.variables:
            self._load_variable(variable, saved[variable.path])

    def _load_variable(self, variable, value):
        """Assign a saved full value, keeping the variable's layout (a mutant drops it)."""
        self.assign(variable, value, "load_weights")

    def _model_axes(self, distribution, path, rank):
        """A model variable's axes: kept apart from _axes_for so that a mutant can
        break model layouts without touching standalone variables."""
        return distribution.axes_for(path, rank)

    def model_variables(self, model):
        return [(v.path, v) for v in model.variables]

    def variable_layout_of(self, variable):
        value = variable.value
        placements = tuple(value.placements) if isinstance(value, DTensor) else None
        local = value.to_local() if isinstance(value, DTensor) else value
        return variable.axes, placements, local.detach()

    def read(self, model, variable, how):
        value = variable.value
        return full_tensor(value)

    def get_weights(self, model):
        return [self.read(model, variable, "get_weights") for _, variable in self.model_variables(model)]

    def make_variable(self, distribution, device_mesh, spec, initial):
        axes = spec.preassigned
        if axes is None:
            axes = distribution.axes_for(spec.path, len(spec.shape))
        return self.make_explicit_variable(distribution, self._keras_layout(axes, device_mesh), initial, spec)

    def make_explicit_variable(self, distribution, layout, initial, spec):
        if len(layout.axes) != len(spec.shape):
            raise ValueError(f"variable {spec.path!r} of shape {tuple(spec.shape)} cannot take layout axes "
                             f"{tuple(layout.axes)}: one axis per dim")
        value = self.distribute_variable(self._user_tensor(initial), layout, spec.trainable)
        return ReferenceVariable(spec.path, value, layout, spec.trainable)

    def variable_value(self, variable):
        return variable.value

    def variable_matmul(self, distribution, x, variable):
        return self.matmul(x, variable.value)

    @torch.no_grad()
    def assign(self, variable, value, how):
        old = variable.value
        new = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value).to(old.dtype)
        if how in ("assign_add", "assign_sub"):
            current = self.read(None, variable, how)
            new = current + new if how == "assign_add" else current - new
        new = new.reshape(old.shape)
        if isinstance(old, DTensor):
            new = self._distribute(new, variable.layout).to_local()
            old = old.to_local()
        old.copy_(new)

    def freeze_layers(self, model, layers):
        for variable in model.variables:
            if layer_of(variable.path) in layers:
                variable.trainable = False

    def train(self, model, spec, x, y):
        if model.optimizer is None:
            model.optimizer = self._optimizer(spec)
            # As in Keras, the step counter is a variable created under the
            # distribution: an int64 scalar, replicated, not trainable.
            layout = self._keras_layout((), model.distribution.device_mesh)
            model.iterations = self.distribute_variable(torch.tensor(0), layout, trainable=False)
        losses = []
        for _ in range(spec.steps):
            losses.append(self._step(model, spec, x, y))
            local = model.iterations.to_local() if isinstance(model.iterations, DTensor) else model.iterations
            local.add_(1)
        return losses

    def _optimizer(self, spec):
        """The optimizer of `spec`, with Keras' update rules (a mutant drops a setting)."""
        return training.Optimizer(spec)

    def _step(self, model, spec, x, y):
        data_parallel = model.distribution.kind == DATA_PARALLEL
        differentiated = self._differentiated(model)
        params = {v.path: v.value.detach().requires_grad_(v.path in differentiated) for v in model.variables}
        compute = params
        if not data_parallel:
            # Sharded storage, replicated compute: gathering a parameter is
            # differentiable, and its gradient comes back in the parameter's own
            # placements; DTensor cannot propagate every sharding through a dense
            # layer (size-1 sharded dims, uneven shards).
            compute = {p: replicated(w) for p, w in params.items()}
            mesh = next(iter(params.values())).device_mesh
            x, y = (self.global_batch(t, mesh, model.distribution.batch_dim_name) for t in (x, y))
        loss = training.mse(training.forward(model.spec, compute, x), y, spec.loss_reduction)
        wanted = [p for p, w in params.items() if w.requires_grad]
        grads = dict(zip(self._gradient_paths(model, wanted), torch.autograd.grad(loss, [params[p] for p in wanted])))
        if data_parallel:
            # The mean of the ranks' losses is the global batch's mean; a sum
            # over the batch is that mean times the batch axis' positions.
            scale = self._summed_loss_scale(spec)
            grads = {p: g * scale for p, g in self._sync_gradients(grads, spec).items()}
            loss = self._average(loss.detach()) * scale
        elif isinstance(loss, DTensor):
            loss = loss.full_tensor()
        grads = {p: self._clip_by_norm(g, spec.clipnorm) for p, g in grads.items()}
        weights = {p: w.detach() for p, w in params.items()}
        model.optimizer.step(weights, grads)
        for variable in model.variables:
            variable.value = weights[variable.path]
        return loss.item()

    def _gradient_paths(self, model, wanted):
        """The variables the gradients of `wanted` (in order) belong to: those
        same variables (a mutant pairs them by position with a stale list)."""
        return wanted

    def _differentiated(self, model):
        """Paths that get a gradient: every trainable variable."""
        return {v.path for v in model.variables if v.trainable}

    def _sync_gradients(self, grads, spec):
        """DataParallel: every rank applies the mean of all ranks' gradients
        (mutants change what they sync, or that they do)."""
        return {p: self._average(g) for p, g in grads.items()}

    def _summed_loss_scale(self, spec):
        """DataParallel: the factor from the mean of the ranks' losses to the
        global batch's loss: 1 for a mean, the batch axis' positions for a sum
        (a mutant forgets it)."""
        if spec.loss_reduction != "sum":
            return 1
        return spec.distribution.mesh.axis_size(spec.distribution.batch_dim_name)

    @staticmethod
    def _clip_by_norm(grad, clipnorm):
        """Keras' clip_by_norm: the whole variable's gradient scaled to an L2 norm of at most clipnorm."""
        if clipnorm is None:
            return grad
        norm = math.sqrt(full_tensor((grad * grad).sum()).item())
        return grad * clipnorm / max(norm, clipnorm)

    @staticmethod
    def _average(tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / dist.get_world_size()

    @staticmethod
    def global_batch(tensor, mesh, batch_axis):
        """This rank's slice of the batch as the whole global batch, replicated
        on `mesh`: the slices of the batch axis' positions, gathered in order."""
        placements = [Shard(0) if name == batch_axis else Replicate() for name in mesh.mesh_dim_names]
        local = DTensor.from_local(tensor, mesh, placements, run_check=False)
        return local.redistribute(mesh, [Replicate()] * mesh.ndim)

    def iterations(self, model):
        return model.iterations

    def scope_matmul(self, model, x):
        return self.matmul(x, model.variables[0].value)

