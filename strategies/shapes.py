"""Tensor shapes, scalars included, with dims chosen against the mesh axis
that shards them: smaller than, equal to, not divisible by and divisible by
its size, size 1, and size 0 where allowed."""

from hypothesis import strategies as st

MAX_DIM = 9


def dim_for(axis_size, allow_empty):
    """A dim that lands on the interesting sides of `axis_size` (the number of shards)."""
    candidates = {1, max(axis_size - 1, 1), axis_size, axis_size + 1, 2 * axis_size, 2 * axis_size + 1}
    if allow_empty:
        candidates.add(0)
    return st.one_of(st.sampled_from(sorted(candidates)), st.integers(1, MAX_DIM))


@st.composite
def shapes(draw, rank=None, min_rank=0, max_rank=4, allow_empty=True):
    if rank is None:
        rank = draw(st.integers(min_rank, max_rank), label="rank")
    return tuple(draw(st.lists(dim_for(1, allow_empty), min_size=rank, max_size=rank), label="shape"))


@st.composite
def shapes_for_layout(draw, mesh, axes, allow_empty=True):
    """A shape of len(axes) whose sharded dims are drawn against their mesh axis."""
    dims = []
    for i, axis in enumerate(axes):
        size = mesh.axis_size(axis) if axis is not None else 1
        dims.append(draw(dim_for(size, allow_empty), label=f"dim {i} (sharded on {axis})"))
    return tuple(dims)
