"""Plain, picklable descriptions of one example.

Strategies draw them, rank-side bodies turn them into Keras and torch objects,
oracles compute expectations from them. Nothing here imports torch or Keras.
"""

from dataclasses import dataclass

import numpy as np

DATA_PARALLEL = "DataParallel"
MODEL_PARALLEL = "ModelParallel"


@dataclass(frozen=True)
class MeshSpec:
    """A device mesh: `ranks[i]` sits at mesh position `np.unravel_index(i, shape)`."""

    shape: tuple
    axis_names: tuple
    ranks: tuple

    def devices(self, device_type):
        return [f"{device_type}:{r}" for r in self.ranks]

    def coordinate(self, rank):
        return tuple(int(c) for c in np.unravel_index(self.ranks.index(rank), self.shape))

    def axis_size(self, name):
        return self.shape[self.axis_names.index(name)]


@dataclass(frozen=True)
class DistributionSpec:
    """DataParallel or ModelParallel on `mesh`; `layout_map` is ((path, axes), ...)."""

    kind: str
    mesh: MeshSpec
    layout_map: tuple = ()
    batch_dim_name: str = None


@dataclass(frozen=True)
class VariableSpec:
    shape: tuple
    dtype: str
    path: str = "v"
    trainable: bool = False
    preassigned: tuple = None  # axes of a layout set on the variable before asking

    @property
    def rank(self):
        return len(self.shape)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of `shape` and `dtype` whose values come from `seed` (see values.py)."""

    shape: tuple
    dtype: str
    seed: int = 0


@dataclass(frozen=True)
class Operand:
    """A matmul operand: a plain tensor (`axes is None`) or a DTensor laid out by `axes` on the mesh."""

    tensor: TensorSpec
    axes: tuple = None

    @property
    def is_distributed(self):
        return self.axes is not None


@dataclass(frozen=True)
class ModelSpec:
    """A stack of dense layers: widths (inputs, then each layer's units), per layer a bias flag and an activation."""

    widths: tuple
    biases: tuple
    activations: tuple
    dtype: str = "float32"
    seed: int = 0

    def variable_shapes(self):
        """(path, shape) of every variable in creation order: d<i>/kernel, d<i>/bias."""
        shapes = []
        for i, (fan_in, units) in enumerate(zip(self.widths, self.widths[1:])):
            shapes.append((f"d{i}/kernel", (fan_in, units)))
            if self.biases[i]:
                shapes.append((f"d{i}/bias", (units,)))
        return shapes


@dataclass(frozen=True)
class TrainSpec:
    """k steps of `optimizer` on a model under a distribution. Under
    DataParallel rank r feeds slice r of the global batch; under
    ModelParallel (a batch axis of size 1) every rank feeds the whole batch."""

    model: ModelSpec
    distribution: DistributionSpec
    optimizer: str
    learning_rate: float
    steps: int
    global_batch: int
    entry: str
    data_seed: int = 0


# Per-chapter example and observation types: what the driver sends to every
# rank and what each rank sends back. One section per chapter of the contract;
# add a chapter's types under its own heading.

# == chapter: layout (layout.variable, layout.placements) ==

# == chapter: variables (variable.wrapping, variable.scope, variable.read, variable.assign) ==

# == chapter: meshes (mesh.identity, mesh.reuse) ==

# == chapter: tensors (tensor.storage, data.input) ==

# == chapter: ops (ops.matmul, ops.scope) ==

# == chapter: training (train.equivalence, optimizer.iterations) ==

# == chapter: harness (run/reply messages, leak observations) ==
