"""Device meshes whose size equals the world size, in any device order."""

import math

from hypothesis import strategies as st

from kdist_props.specs import MeshSpec

# Common names first (they shrink to them), then arbitrary identifiers: code that
# hard-codes "batch" or "model" must meet other names too.
axis_name = st.one_of(
    st.sampled_from(["batch", "model", "data", "x", "y"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True),
)


def factorizations(n, ndim):
    """Every ordered tuple of `ndim` positive ints whose product is n."""
    if ndim == 1:
        return [(n,)]
    return [(d, *rest) for d in range(1, n + 1) if n % d == 0 for rest in factorizations(n // d, ndim - 1)]


@st.composite
def meshes(draw, world_size, min_ndim=1, max_ndim=3, identity_order=False):
    """identity_order=True keeps ranks ascending along every mesh dim: torch
    2.13 DTensor collectives (full_tensor, matmul reductions) gather in
    global-rank order and give wrong values on permuted meshes, so clauses
    whose observation needs a collective draw only these."""
    ndim = draw(st.integers(min_ndim, max_ndim), label="mesh ndim")
    shape = draw(st.sampled_from(factorizations(world_size, ndim)), label="mesh shape")
    names = draw(st.lists(axis_name, min_size=ndim, max_size=ndim, unique=True), label="mesh axis names")
    ranks = tuple(range(world_size))
    if not identity_order:
        ranks = tuple(draw(st.permutations(ranks), label="device order"))
    assert math.prod(shape) == world_size
    return MeshSpec(shape=tuple(shape), axis_names=tuple(names), ranks=ranks)
