"""The contract: its clauses (DESIGN.md §3; ids are stable, reports and
baselines use them), and in this package what each example and observation
is (specs.py) and what single-process torch expects of them (oracles.py,
training.py with error_bounds.py, values.py)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Clause:
    id: str
    tier: str
    statement: str


CLAUSES = (
    Clause("layout.variable", "A", "get_variable_layout returns a TensorLayout with one axis per dim (scalars too) on the "
           "distribution's mesh: DataParallel replicates, ModelParallel uses the LayoutMap match, a preassigned layout wins"),
    Clause("layout.placements", "A", "mesh axis i named at tensor dim d gives Shard(d), else Replicate(); an unknown or "
           "repeated axis name is a ValueError naming it"),
    Clause("variable.wrapping", "A", "keras.Variable of any dtype and trainable flag, under a distribution or with a "
           "layout, never raises; requires_grad == trainable and float/complex; a trainable float/complex value is an "
           "nn.Parameter; dtype and value kept"),
    Clause("mesh.identity", "A", "the backend mesh of a DeviceMesh has its shape, axis names and rank layout on every "
           "rank, for any sequence of meshes created and discarded"),
    Clause("mesh.reuse", "A", "converting an equal mesh configuration again creates no new process group"),
    Clause("tensor.storage", "A", "distribute_tensor holds exactly the torch.chunk shard of x on each rank; the full "
           "tensor equals x bit for bit"),
    Clause("data.input", "A", "distribute_data_input of per-rank batches gives their concatenation in mesh order"),
    Clause("ops.matmul", "A", "matmul of any DTensor/plain mix equals torch.matmul of the full operands, with Keras' "
           "result dtype, and never raises 'mixed torch.Tensor and DTensor'"),
    Clause("tensor.inputs", "A", "distribute_tensor of a plain tensor (leaf or not, contiguous or not), a numpy "
           "array, a Keras Variable or a DTensor of any layout gives the torch.chunk shards of its value, "
           "redistributing where needed, never raising"),
    Clause("tensor.input-unchanged", "A", "distribute_tensor and Variable.assign leave their input unchanged, value "
           "and storage, on every rank, even where ranks pass different values"),
    Clause("layoutmap.values", "A", "a LayoutMap value may be a TensorLayout, a tuple or a list; an exact key wins, "
           "else the one full regex match; several matches, or a layout with the wrong number of axes, are a "
           "ValueError naming the variable"),
    Clause("distribution.defaults", "A", "list_devices() and DataParallel() with no arguments span every process; "
           "ModelParallel(layout_map=..., batch_dim_name=...) takes the LayoutMap's mesh and that batch dim"),
    Clause("variable.scope", "B", "variables created under a distribution scope have the clause layout, the chunk "
           "shards and the single-process initial value"),
    Clause("variable.init", "B", "a model built under a distribution with Keras' own initializers holds on every "
           "rank the same global value of every variable: a deterministic initializer's value, and for seeded random "
           "ones the single-process value, within the bounds the initializer computes from the global shape"),
    Clause("variable.read", "B", "reading a distributed variable gives the full global value on every rank"),
    Clause("variable.assign", "B", "assigning plain values of any dtype keeps the layout and gives the new full value"),
    Clause("variable.explicit-layout", "B", "keras.Variable(..., layout=...) with no distribution, under "
           "DataParallel or ModelParallel, from a tensor, numpy or a DTensor, holds the chunk shards of its layout "
           "and keeps layout and full value through reads, assign, assign_add, assign_sub and matmul"),
    Clause("optimizer.iterations", "B", "an optimizer under a distribution has an int scalar, non-trainable "
           "iterations that counts steps identically on every rank"),
    Clause("model.checkpoint", "B", "save_weights of a model built under a distribution or with none, then "
           "load_weights into a model of the same layers built under it or with none: every variable reads the saved "
           "value on every rank, and a distributed one keeps its layout and holds the chunk shards"),
    Clause("train.equivalence", "B", "k training steps under DataParallel/ModelParallel (SGD, Adam, AdamW, RMSprop; "
           "weight decay, clipnorm; a mean or summed loss) give the single-process loss and weights on the global batch"),
    Clause("train.batch-norm", "B", "a fit step of BatchNormalization under DataParallel leaves on every rank the "
           "moving statistics of single-process training on the global batch"),
    Clause("eval.count-metrics", "B", "evaluate under a distribution reports a count metric (TruePositives) of the "
           "global batch, as single-process evaluate does, logged as a Python float"),
    Clause("ops.scope", "B", "under a ModelParallel scope, keras.ops.matmul of a plain input with a sharded variable "
           "equals the single-process result"),
)

BY_ID = {clause.id: clause for clause in CLAUSES}


def tier(tier_name):
    return [clause.id for clause in CLAUSES if clause.tier == tier_name]
