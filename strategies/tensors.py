"""Whole examples for the Tier A clauses, built from meshes, shapes, dtypes and layouts."""

from dataclasses import replace

from hypothesis import strategies as st

from kdist_props.contract.specs import (
    DATA_PARALLEL,
    MODEL_PARALLEL,
    DistributionSpec,
    Operand,
    TensorSpec,
    VariableExample,
    VariableSpec,
)
from kdist_props.strategies.dtypes import ALL, COMPLEX, FLOAT, MATMUL, dtypes
from kdist_props.strategies.layouts import layouts
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.shapes import shapes, shapes_for_layout

seeds = st.integers(0, 2**16)
# Keras variable names cannot hold "/"; layout-map keys of other variables carry a
# digit, so as regexes they never match one of these.
paths = st.from_regex(r"[a-z]{1,5}(_[a-z]{1,5}){0,2}", fullmatch=True)


@st.composite
def laid_out_tensors(draw, mesh, min_rank=0, max_rank=4, dtype=None, allow_empty=True):
    """(TensorSpec, axes): a tensor and a valid layout for it on `mesh`."""
    rank = draw(st.integers(min_rank, max_rank), label="tensor rank")
    axes = draw(layouts(mesh, rank), label="axes")
    shape = draw(shapes_for_layout(mesh, axes, allow_empty=allow_empty), label="tensor shape")
    dtype = dtype or draw(dtypes(), label="dtype")
    return TensorSpec(shape=shape, dtype=dtype, seed=draw(seeds, label="seed")), axes


@st.composite
def variable_specs(draw, mesh, min_rank=0, max_rank=4, allowed_dtypes=ALL):
    rank = draw(st.integers(min_rank, max_rank), label="variable rank")
    shape = draw(shapes(rank=rank), label="variable shape")
    preassigned = draw(st.none() | layouts(mesh, rank), label="preassigned layout")
    return VariableSpec(
        shape=shape,
        dtype=draw(dtypes(allowed_dtypes), label="variable dtype"),
        path=draw(paths, label="variable path"),
        trainable=draw(st.booleans(), label="trainable"),
        preassigned=preassigned,
    )


@st.composite
def standalone_variables(draw, world_size, trainable_ints=True, **variable_options):
    """A VariableExample on a mesh in any device order: laid out by an
    explicit layout, a LayoutMap entry, or neither. trainable_ints=False makes
    int and bool variables non-trainable, for clauses about something else:
    Keras on torch cannot create a trainable int variable (variable.wrapping's
    bug), which would hide every other check."""
    mesh = draw(meshes(world_size), label="mesh")
    variable = draw(variable_specs(mesh, **variable_options), label="variable")
    if not trainable_ints and variable.dtype not in FLOAT + COMPLEX:
        variable = replace(variable, trainable=False)
    distribution = draw(distributions(mesh, variable), label="distribution")
    initial = TensorSpec(variable.shape, variable.dtype, draw(seeds, label="initial seed"))
    return VariableExample(distribution, variable, initial)


@st.composite
def distributions(draw, mesh, variable=None):
    """DataParallel (on a 1-axis mesh) or ModelParallel on `mesh`; for
    ModelParallel the LayoutMap may hold an entry for `variable` (by exact path)
    besides unrelated ones. DataParallel on a mesh of more axes is a case of its
    own (test_data_parallel_on_a_multi_axis_mesh_replicates): Keras fails to
    construct it, which must not hide what these examples check."""
    kinds = [DATA_PARALLEL, MODEL_PARALLEL] if len(mesh.shape) == 1 else [MODEL_PARALLEL]
    kind = draw(st.sampled_from(kinds), label="distribution")
    layout_map = ()
    if kind == MODEL_PARALLEL:
        entries = draw(st.lists(st.tuples(paths, st.integers(0, 4)), max_size=2, unique_by=lambda e: e[0]),
                       label="unrelated layout map entries")
        layout_map = tuple((f"other9_{p}", draw(layouts(mesh, r), label="unrelated layout")) for p, r in entries)
        if variable is not None and draw(st.booleans(), label="variable in layout map"):
            layout_map += ((variable.path, draw(layouts(mesh, variable.rank), label="variable's layout")),)
    return DistributionSpec(kind=kind, mesh=mesh, layout_map=layout_map, batch_dim_name=mesh.axis_names[0])


MATMUL_KINDS = ("1-D x 1-D", "1-D x 2-D", "2-D x 1-D", "2-D x 2-D", "batched")


@st.composite
def matmul_shapes(draw):
    """(kind, a shape, b shape): every torch.matmul case, batched dims broadcasting."""
    kind = draw(st.sampled_from(MATMUL_KINDS), label="matmul kind")
    m, k, n = (draw(st.integers(1, 6), label=name) for name in "mkn")
    if kind == "1-D x 1-D":
        return kind, (k,), (k,)
    if kind == "1-D x 2-D":
        return kind, (k,), (k, n)
    if kind == "2-D x 1-D":
        return kind, (m, k), (k,)
    if kind == "2-D x 2-D":
        return kind, (m, k), (k, n)
    batch = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="batch dims")
    b_batch = [draw(st.sampled_from([d, 1]), label="broadcast b batch dim") for d in batch]
    b_batch = b_batch[draw(st.integers(0, len(b_batch)), label="b batch rank cut"):]
    return kind, (*batch, m, k), (*b_batch, k, n)


@st.composite
def operands(draw, mesh, shape, dtype, distributed):
    axes = draw(layouts(mesh, len(shape)), label="operand axes") if distributed else None
    return Operand(TensorSpec(shape=shape, dtype=dtype, seed=draw(seeds, label="operand seed")), axes)


@st.composite
def matmul_cases(draw, world_size):
    """(mesh, kind, a, b): each operand plain or a DTensor with drawn placements, in both orders."""
    mesh = draw(meshes(world_size), label="mesh")
    kind, a_shape, b_shape = draw(matmul_shapes(), label="shapes")
    dtype_a = draw(dtypes(MATMUL), label="dtype a")
    dtype_b = draw(st.just(dtype_a) | dtypes(MATMUL), label="dtype b")
    mix = draw(st.sampled_from([(True, False), (False, True), (True, True), (False, False)]), label="operand mix")
    a = draw(operands(mesh, a_shape, dtype_a, mix[0]), label="a")
    b = draw(operands(mesh, b_shape, dtype_b, mix[1]), label="b")
    return mesh, kind, a, b
