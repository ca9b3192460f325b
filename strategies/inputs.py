"""Inputs as users hand them to Keras: plain tensors (leaf or not, contiguous
or not), numpy arrays, DTensors and Keras variables of any layout; and the
examples of the clauses that take them (tensor.inputs, tensor.input-unchanged,
variable.explicit-layout)."""

from dataclasses import replace

from hypothesis import strategies as st

from kdist_props.contract.specs import (
    MODEL_PARALLEL,
    PLAIN_SOURCE_KINDS,
    DistributeExample,
    DistributionSpec,
    ExplicitStep,
    ExplicitVariableExample,
    Source,
    TensorSpec,
    UnchangedExample,
    VariableExample,
    VariableSpec,
)
from kdist_props.strategies.dtypes import BOOL, COMPLEX, FLOAT
from kdist_props.strategies.layouts import layouts
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.tensors import distributions, laid_out_tensors, seeds, variable_specs

ASSIGNS = ("assign", "assign_add", "assign_sub")


def kinds_for(tensor, allowed):
    """The kinds of `allowed` that can hold `tensor`: numpy has no bfloat16, only
    float/complex tensors can be non-leaf (require grad), a scalar has no strided view."""
    kinds = [k for k in allowed if not (k == "numpy" and tensor.dtype == "bfloat16")]
    if tensor.dtype not in FLOAT + COMPLEX:
        kinds = [k for k in kinds if k != "non-leaf"]
    if not tensor.shape:
        kinds = [k for k in kinds if k != "strided"]
    return kinds


@st.composite
def sources(draw, mesh, tensor, allowed):
    """`tensor` as one of the `allowed` kinds; a DTensor or variable gets a layout of its own, drawn."""
    kind = draw(st.sampled_from(kinds_for(tensor, allowed)), label="input kind")
    axes = draw(layouts(mesh, len(tensor.shape)), label="input's own layout") if kind in ("dtensor", "variable") \
        else None
    return Source(tensor, kind, axes)


@st.composite
def distribute_examples(draw, world_size, kinds):
    """tensor.inputs: an input of one of `kinds`, to a drawn layout (a
    distributed input's own layout may equal it or not)."""
    mesh = draw(meshes(world_size), label="mesh")
    tensor, axes = draw(laid_out_tensors(mesh), label="tensor")
    return DistributeExample(mesh, draw(sources(mesh, tensor, kinds), label="input"), axes)


@st.composite
def unchanged_examples(draw, world_size, assign):
    """tensor.input-unchanged: a plain input, its values the same on every rank or
    not, to distribute (assign=False) or to assign to a variable with an
    explicit layout under ModelParallel (assign=True), where Keras distributes
    it: on a mesh of two or three axes, so that one assignment both cuts the
    value on one axis and replicates it on another. Assigned values always
    differ by rank: only then does a write into them show, and assign has no
    other question for values that agree (variable.assign asks those)."""
    mesh = draw(meshes(world_size, min_ndim=2 if assign else 1), label="mesh")
    tensor, axes = draw(laid_out_tensors(mesh), label="tensor")
    # Non-leaf inputs are tensor.inputs' own: a target that refuses them must not hide a write into the others.
    kinds = [kind for kind in PLAIN_SOURCE_KINDS if kind != "non-leaf"]
    source = draw(sources(mesh, tensor, kinds), label="input")
    into = None
    if assign:
        variable = VariableSpec(tensor.shape, tensor.dtype, path="assigned", preassigned=axes)
        distribution = DistributionSpec(MODEL_PARALLEL, mesh, batch_dim_name=mesh.axis_names[0])
        into = VariableExample(distribution, variable, replace(tensor, seed=draw(seeds, label="initial seed")))
    per_rank = assign or draw(st.booleans(), label="values differ by rank")
    return UnchangedExample(mesh, source, axes, per_rank, into)


@st.composite
def explicit_steps(draw, variable):
    hows = ("assign",) if variable.dtype in BOOL else ASSIGNS  # Keras defines no + or - on booleans
    value_kinds = ("tensor",) if variable.dtype == "bfloat16" else ("numpy", "tensor")
    return ExplicitStep(
        how=draw(st.sampled_from(hows), label="how"),
        value=TensorSpec(variable.shape, variable.dtype, draw(seeds, label="value seed")),
        value_kind=draw(st.sampled_from(value_kinds), label="value kind"),
    )


@st.composite
def explicit_variable_examples(draw, world_size):
    """A variable with an explicit layout, made with no distribution or under
    DataParallel / ModelParallel, from a tensor, numpy or a DTensor (of its
    layout or another); then assignments; then matmul where it is 1-D or 2-D."""
    mesh = draw(meshes(world_size), label="mesh")
    variable = draw(variable_specs(mesh), label="variable")
    variable = replace(variable, preassigned=draw(layouts(mesh, variable.rank), label="explicit layout"),
                       trainable=variable.trainable and variable.dtype in FLOAT + COMPLEX)
    distribution = draw(st.none() | distributions(mesh, variable), label="distribution (None: no scope)")
    initial = TensorSpec(variable.shape, variable.dtype, draw(seeds, label="initial seed"))
    source = draw(sources(mesh, initial, ("leaf", "numpy", "dtensor")), label="initial value")
    steps = tuple(draw(st.lists(explicit_steps(variable), max_size=3), label="steps"))
    x = None
    if variable.rank in (1, 2):
        rows = draw(st.integers(1, 3), label="input rows")
        x = TensorSpec((rows, variable.shape[0]), variable.dtype, draw(seeds, label="input seed"))
    return ExplicitVariableExample(mesh, distribution, variable, source, steps, x)
