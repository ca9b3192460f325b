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

    @property
    def in_rank_order(self):
        return list(self.ranks) == sorted(self.ranks)


def meshes_in(value):
    """Every MeshSpec inside an example (dataclass fields, tuples, lists), in order."""
    if isinstance(value, MeshSpec):
        return [value]
    if hasattr(value, "__dataclass_fields__"):
        return [m for name in value.__dataclass_fields__ for m in meshes_in(getattr(value, name))]
    if isinstance(value, (tuple, list)):
        return [m for item in value for m in meshes_in(item)]
    return []


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
    """k steps of `optimizer` on a model under a distribution, compiled with
    the mean squared error of `loss_reduction`. The global
    batch is cut into as many equal slices as the batch axis has positions;
    every rank feeds the slice of its position on that axis (DataParallel on
    a 1-D mesh: rank r feeds slice r; a batch axis of size 1: every rank feeds
    the whole batch)."""

    model: ModelSpec
    distribution: DistributionSpec
    optimizer: str
    learning_rate: float
    steps: int
    global_batch: int
    entry: str
    data_seed: int = 0
    frozen: tuple = ()  # Dense layers (indices) set `trainable = False` after the model is built
    freeze_after: int = 0  # the steps trained before they are frozen (0: before the first step)
    loss_reduction: str = "sum_over_batch_size"  # the mean squared error's reduction over the batch
    weight_decay: float = None  # the optimizer's weight_decay (None: no decay)
    clipnorm: float = None  # the optimizer's clipnorm: each gradient scaled to at most this L2 norm
    data_kind: str = "numpy"  # how the batch reaches the entry point: numpy arrays or torch tensors

    def is_frozen(self, path, step):
        """Whether the variable at `path` belongs to a layer frozen at `step` (counted from 0)."""
        return layer_of(path) in self.frozen and step >= self.freeze_after


def layer_of(path):
    """The Dense layer index i of a model variable's path d<i>/<name>."""
    return int(path.split("/")[0].removeprefix("d"))


# Per-chapter example and observation types: what the driver sends to every
# rank and what each rank sends back. One section per chapter of the contract;
# add a chapter's types under its own heading.

# == chapter: layout (layout.variable, layout.placements) ==

@dataclass(frozen=True)
class VariableLayoutExample:
    """layout.variable: ask `distribution` for the layout of a variable of `variable`."""

    distribution: DistributionSpec
    variable: VariableSpec


@dataclass(frozen=True)
class LayoutObservation:
    """What get_variable_layout returned: its type name, axes and mesh
    ((shape, axis names, devices)); axes and mesh are None for a non-layout."""

    type: str
    axes: tuple = None
    mesh: tuple = None


@dataclass(frozen=True)
class PlacementsExample:
    """layout.placements: the torch placements of TensorLayout(axes, mesh)."""

    mesh: MeshSpec
    axes: tuple


@dataclass(frozen=True)
class PlacementsObservation:
    """("S", dim) / ("R",) per mesh axis, the message of the ValueError raised
    instead, or what the target returned that the suite cannot read."""

    placements: tuple = None
    error: str = None
    unreadable: str = None

# == chapter: variables (variable.wrapping, variable.scope, variable.read, variable.assign) ==

@dataclass(frozen=True)
class VariableExample:
    """A standalone variable (`variable.preassigned`: an explicit layout, else the
    distribution's) created under `distribution` from the values of `initial`."""

    distribution: DistributionSpec
    variable: VariableSpec
    initial: TensorSpec


@dataclass(frozen=True)
class WrappingObservation:
    """The torch facts of a Keras variable's value."""

    is_parameter: bool = None  # an nn.Parameter, around the DTensor or inside it
    requires_grad: bool = None
    full: object = None  # torch tensor: the global value


@dataclass(frozen=True)
class ModelExample:
    """variable.scope / variable.read: a model of `model` built under `distribution`."""

    model: ModelSpec
    distribution: DistributionSpec


@dataclass(frozen=True)
class StoredVariable:
    """One variable: its layout axes, torch placements (None: not a DTensor), local shard and reads."""

    axes: tuple
    placements: tuple
    local: object  # torch tensor
    reads: tuple  # ((how, torch tensor), ...)


@dataclass(frozen=True)
class ModelStorageObservation:
    """Every variable the target lists, in order, and what model.get_weights() gave."""

    variables: tuple  # ((path, StoredVariable), ...)
    weights: tuple  # torch tensors, as get_weights returned them


@dataclass(frozen=True)
class AssignExample:
    """variable.assign: `how` the value of `value` (as `value_kind`) into the variable of `target`."""

    target: VariableExample
    value: TensorSpec
    value_kind: str
    how: str


@dataclass(frozen=True)
class AssignObservation:
    layout_kept: bool
    full: object  # torch tensor

# == chapter: meshes (mesh.identity, mesh.reuse) ==

@dataclass(frozen=True)
class MeshConfig:
    """Everything a backend mesh depends on: the mesh (shape, axis names, device
    order) and the Keras type of its devices ("cpu" or "gpu"). A cache of
    backend meshes is correct only if its key covers all of it."""

    mesh: MeshSpec
    device_type: str = "cpu"

    def devices(self):
        return self.mesh.devices(self.device_type)


@dataclass(frozen=True)
class MeshStep:
    """mesh.identity, one step on the ranks' persistent meshes: `start` (no
    mesh, a fresh target), `create` mesh `name` of `config`, `replace` mesh
    `old` by mesh `name` of `config` at the freed mesh's address (so with its
    id()), `drop` mesh `name`, `collect` (garbage), `convert` mesh `name`."""

    op: str
    name: str = None
    config: MeshConfig = None
    old: str = None


@dataclass(frozen=True)
class BackendMesh:
    """A torch DeviceMesh: shape, dim names, global ranks in row-major order, device type."""

    shape: tuple
    dim_names: tuple
    ranks: tuple
    device_type: str


@dataclass(frozen=True)
class MeshStepObservation:
    backend_mesh: BackendMesh = None  # convert: what the target gave
    took_old_id: bool = None  # replace: whether the new mesh got the freed mesh's id() on this rank


@dataclass(frozen=True)
class MeshReuseExample:
    """mesh.reuse: convert two distinct DeviceMesh objects of `config`, one after the other."""

    config: MeshConfig


@dataclass(frozen=True)
class MeshReuseObservation:
    new_groups: int  # process groups the second conversion created
    same_mesh: bool  # both conversions describe the same backend mesh

# == chapter: tensors (tensor.storage, data.input) ==

@dataclass(frozen=True)
class StorageExample:
    """tensor.storage: distribute the values of `tensor` by TensorLayout(axes, mesh)."""

    mesh: MeshSpec
    tensor: TensorSpec
    axes: tuple


@dataclass(frozen=True)
class StorageObservation:
    is_dtensor: bool
    placements: tuple  # ("S", dim) / ("R",) per mesh axis; None for a plain tensor
    local: object  # torch tensor: this rank's shard
    full: object  # torch tensor: the gathered whole


@dataclass(frozen=True)
class DataInputExample:
    """data.input: every rank's own batch of `batch` (seeded by rank), sharded on `batch_dim_name`."""

    mesh: MeshSpec
    batch: TensorSpec
    batch_dim_name: str


@dataclass(frozen=True)
class FullObservation:
    """A result's global value (DTensors gathered) as a plain torch tensor."""

    full: object

# == chapter: ops (ops.matmul, ops.scope) ==

@dataclass(frozen=True)
class MatmulExample:
    """ops.matmul: keras.ops.matmul(a, b), each operand plain or a DTensor on `mesh`."""

    mesh: MeshSpec
    kind: str
    a: Operand
    b: Operand


@dataclass(frozen=True)
class ScopeMatmulExample:
    """ops.scope: keras.ops.matmul(x, first kernel) of a model built under `distribution`."""

    model: ModelSpec
    distribution: DistributionSpec
    x: TensorSpec


@dataclass(frozen=True)
class VariableMatmulExample:
    """ops.scope: keras.ops.matmul(x, variable) of a plain x and a standalone variable."""

    target: VariableExample
    x: TensorSpec

# == chapter: initializers (variable.init) ==

@dataclass(frozen=True)
class InitExample:
    """variable.init: the dense stack of `model` built under `distribution` by a
    program that calls keras.utils.set_random_seed(seed) on every rank (seed
    None: a program that never seeds, on processes whose random state is their
    own, drawn from process_entropy and the rank), then gives variable i of
    model.variable_shapes() Keras' initializer initializers[i]."""

    model: ModelSpec
    initializers: tuple  # initializer names, one per variable, in model.variable_shapes() order
    distribution: DistributionSpec
    seed: int = None
    process_entropy: int = 0


@dataclass(frozen=True)
class InitObservation:
    """Every variable's full value as this rank reads it, right after the build."""

    values: tuple  # ((path, torch tensor), ...) in the target's variable order

# == chapter: batch normalization (train.batch-norm) ==

@dataclass(frozen=True)
class BatchNormExample:
    """train.batch-norm: Input(features) -> BatchNormalization -> Dense(1),
    one fit step of SGD on the global batch of `global_batch` rows (values
    from `data_seed`) under `distribution` (DataParallel: each rank feeds the
    slice of its position on the batch axis)."""

    features: int
    global_batch: int
    distribution: DistributionSpec
    data_seed: int = 0


@dataclass(frozen=True)
class BatchNormObservation:
    """The layer's moving statistics after the step, as this rank reads them."""

    moving_mean: object  # torch tensor
    moving_variance: object  # torch tensor

# == chapter: metrics (eval.count-metrics) ==

@dataclass(frozen=True)
class CountMetricExample:
    """eval.count-metrics: Input(features) -> Dense "d0" (1 unit, sigmoid, kernel
    of ones, bias of zeros) evaluated with TruePositives on the global batch of
    `global_batch` rows (values from `data_seed`, labels 0/1) under
    `distribution`; each rank feeds the slice of its position on the batch axis."""

    features: int
    global_batch: int
    distribution: DistributionSpec
    data_seed: int = 0


@dataclass(frozen=True)
class CountMetricObservation:
    true_positives: float  # what evaluate reported, as a float
    logged_type: str  # the type of the value in evaluate's logs, qualified by its module

# == chapter: training (train.equivalence, optimizer.iterations) ==

@dataclass(frozen=True)
class TrainExample:
    """train.equivalence / optimizer.iterations: build the model of `train`, feed
    this rank's batch through `train.entry` for `train.steps` steps."""

    train: TrainSpec


@dataclass(frozen=True)
class IterationsObservation:
    """The optimizer's `iterations` after training: dtype name, shape, trainable
    flag, and its value (None unless it holds exactly one element)."""

    dtype: str
    shape: tuple
    trainable: bool
    value: int = None


@dataclass(frozen=True)
class TrainObservation:
    """What one rank saw: the loss the entry point reported per step, every
    variable's full value before and after training, and `iterations`."""

    losses: tuple  # floats, one per step
    initial: tuple  # ((path, torch tensor), ...) in the target's variable order
    final: tuple  # ((path, torch tensor), ...)
    iterations: IterationsObservation

    def final_value(self, path):
        return dict(self.final)[path]

    def initial_value(self, path):
        return dict(self.initial)[path]

# == chapter: checkpoints (model.checkpoint) ==

DISTRIBUTED, UNDISTRIBUTED = "distributed", "undistributed"


@dataclass(frozen=True)
class CheckpointExample:
    """model.checkpoint: save_weights of a model of `model` built `saved_from`
    (under `distribution`, or with no distribution at all) holding
    training.initial_weights, then load_weights into a model of the same layers
    built `loaded_into`, holding other values. What is observed is the
    destination model's storage (a ModelStorageObservation)."""

    model: ModelSpec
    distribution: DistributionSpec
    saved_from: str  # DISTRIBUTED or UNDISTRIBUTED
    loaded_into: str  # never UNDISTRIBUTED when saved_from is


# == chapter: tensors, as users hand them over (tensor.inputs, tensor.input-unchanged) ==

@dataclass(frozen=True)
class Source:
    """An input as a user hands it over: `kind` is one of PLAIN_SOURCE_KINDS or DISTRIBUTED_SOURCE_KINDS.
    `axes` lays out the "dtensor" and "variable" kinds (a DTensor, or a Keras
    variable with that explicit layout, on the example's mesh)."""

    tensor: TensorSpec
    kind: str
    axes: tuple = None


# leaf: a plain tensor; non-leaf: computed from one that requires grad;
# strided: a non-contiguous view into a larger storage.
PLAIN_SOURCE_KINDS = ("leaf", "non-leaf", "strided", "numpy")
DISTRIBUTED_SOURCE_KINDS = ("dtensor", "variable")


@dataclass(frozen=True)
class DistributeExample:
    """tensor.inputs: keras.distribution.distribute_tensor(source, TensorLayout(axes, mesh))."""

    mesh: MeshSpec
    source: Source
    axes: tuple


@dataclass(frozen=True)
class UnchangedExample:
    """tensor.input-unchanged: distribute `source` by `axes` (`into` None), or
    assign it to a variable laid out by `into` (a VariableExample). With
    `per_rank` each rank's values differ (seed + rank), so that a write of
    another rank's values into the input shows."""

    mesh: MeshSpec
    source: Source
    axes: tuple
    per_rank: bool
    into: VariableExample = None


@dataclass(frozen=True)
class InputObservation:
    """The input's values and the bytes of its whole storage, before and after the call."""

    value_before: object  # torch tensor
    value_after: object
    storage_before: object  # uint8 torch tensor
    storage_after: object


# == chapter: explicit layouts (variable.explicit-layout) ==

@dataclass(frozen=True)
class ExplicitStep:
    """variable.explicit-layout, one step: `how` (assign, assign_add, assign_sub) the values of `value` as `value_kind`."""

    how: str
    value: TensorSpec
    value_kind: str


@dataclass(frozen=True)
class ExplicitVariableExample:
    """variable.explicit-layout: keras.Variable(initial, layout=TensorLayout(variable.preassigned, mesh))
    made with no distribution (`distribution` None) or under it, then `steps`, then matmul(x, variable)."""

    mesh: MeshSpec
    distribution: DistributionSpec
    variable: VariableSpec
    initial: Source
    steps: tuple  # ExplicitStep, ...
    x: TensorSpec = None


@dataclass(frozen=True)
class ExplicitVariableObservation:
    """The variable as made (StoredVariable), its layout and full value after each step, and the matmul."""

    made: StoredVariable
    after_steps: tuple  # ((axes, placements, full torch tensor), ...)
    matmul: object = None  # torch tensor: the full product


# == chapter: distributions as users build them (layoutmap.values, distribution.defaults) ==

# LayoutMap values as users write them (the LayoutMap docstring allows all three).
LAYOUT_MAP_FORMS = ("TensorLayout", "tuple", "list")


@dataclass(frozen=True)
class LayoutMapEntry:
    key: str  # a regular expression, or a variable's exact path
    axes: tuple
    form: str  # one of LAYOUT_MAP_FORMS


@dataclass(frozen=True)
class LayoutMapExample:
    """layoutmap.values: a variable of `variable` made under ModelParallel(layout_map=<entries on mesh>)."""

    mesh: MeshSpec
    entries: tuple  # LayoutMapEntry, ...
    variable: VariableSpec
    initial: TensorSpec


@dataclass(frozen=True)
class LayoutMapObservation:
    """The variable's layout axes and local shard, or the error creating it raised (type name, message)."""

    axes: tuple = None
    local: object = None
    error_type: str = None
    error: str = None


@dataclass(frozen=True)
class DefaultsExample:
    """distribution.defaults: DataParallel() and list_devices() with no arguments, and
    ModelParallel(layout_map=LayoutMap(mesh), batch_dim_name=batch_dim_name)."""

    mesh: MeshSpec
    batch_dim_name: str


@dataclass(frozen=True)
class DistributionFacts:
    """A distribution's mesh (shape, axis names, devices) and batch dim name."""

    shape: tuple
    axis_names: tuple
    devices: tuple
    batch_dim_name: str


@dataclass(frozen=True)
class DefaultsObservation:
    devices: tuple  # what list_devices() returned
    data_parallel: DistributionFacts
    model_parallel: DistributionFacts

# == chapter: harness (examples of the harness's own probes; the messages
# between driver and ranks are cluster/messages.py's) ==


@dataclass(frozen=True)
class CollectiveProbe:
    """A harness probe: does the communication backend itself refuse
    `collective` on a tensor of `dtype` (a torch dtype name)?"""

    collective: str
    dtype: str


@dataclass(frozen=True)
class FaultExample:
    """probes.fault: misbehave on `rank` as `kind` says; the others return `value`."""

    kind: str
    rank: int
    value: int = 0


@dataclass(frozen=True)
class SizeExample:
    """An example that is only a size (probes.small_dtensor_matmul, shrinking selftests)."""

    n: int


@dataclass(frozen=True)
class RankIdentity:
    rank: int
    world_size: int
    pid: int

# == chapter: environment (bugs of torch itself, probed without a target) ==

@dataclass(frozen=True)
class PermutedGatherExample:
    """The values of `tensor` sharded on dim 0 over the 1-D `mesh`, whose ranks
    are not in rank order, then gathered back with full_tensor()."""

    mesh: MeshSpec
    tensor: TensorSpec


@dataclass(frozen=True)
class GatherObservation:
    local: object  # torch tensor: this rank's shard
    full: object  # torch tensor: what full_tensor() gathered
