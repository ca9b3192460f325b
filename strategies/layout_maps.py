"""LayoutMaps and distributions as users build them (layoutmap.values, distribution.defaults)."""

from hypothesis import strategies as st

from kdist_props.contract.specs import LAYOUT_MAP_FORMS, DefaultsExample, LayoutMapEntry, LayoutMapExample, TensorSpec, \
    VariableSpec
from kdist_props.strategies.dtypes import dtypes
from kdist_props.strategies.layouts import layouts
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.shapes import shapes
from kdist_props.strategies.tensors import paths, seeds

# How the LayoutMap's keys meet the variable's path. "prefix only" is a key that
# re.match finds at the start of the path but that does not fully match it.
MATCHES = ("exact", "regex", "exact and regex", "ambiguous", "prefix only", "none")


@st.composite
def full_matches(draw, path):
    """A regular expression, other than the path itself, that fully matches it."""
    cut = draw(st.integers(0, len(path)), label="regex cut")
    return draw(st.sampled_from([path[:cut] + ".*", ".*" + path[cut:]]), label="regex")


@st.composite
def matching_keys(draw, path, match):
    if match == "exact":
        return [path]
    if match == "regex":
        return [draw(full_matches(path), label="key")]
    if match == "exact and regex":  # the exact key wins: no ambiguity
        return [path, draw(full_matches(path), label="regex key")]
    if match == "ambiguous":
        return draw(st.lists(full_matches(path), min_size=2, max_size=2, unique=True), label="keys")
    if match == "prefix only":
        return [path[:draw(st.integers(1, len(path) - 1), label="prefix length")]]
    return []


@st.composite
def entry_axes(draw, mesh, rank):
    """Axes for a variable of `rank` dims, or (drawn) a wrong number of them."""
    if draw(st.booleans(), label="wrong number of axes"):
        rank = draw(st.integers(0, 4).filter(lambda r: r != rank), label="entry rank")
    return draw(layouts(mesh, rank), label="entry axes")


@st.composite
def layout_map_examples(draw, world_size):
    """A variable and a LayoutMap whose keys match its path in one of MATCHES
    ways, besides unrelated keys (they carry a digit, which paths never do),
    each value a TensorLayout, a tuple or a list, in any order."""
    mesh = draw(meshes(world_size), label="mesh")
    rank = draw(st.integers(0, 3), label="variable rank")
    variable = VariableSpec(draw(shapes(rank=rank), label="variable shape"), draw(dtypes(), label="variable dtype"),
                            draw(paths, label="variable path"))
    matches = [m for m in MATCHES if m != "prefix only" or len(variable.path) > 1]
    keys = draw(matching_keys(variable.path, draw(st.sampled_from(matches), label="match")), label="matching keys")
    unrelated = draw(st.lists(paths, max_size=2, unique=True), label="unrelated keys")
    entries = []
    for key in keys + [f"other9_{p}" for p in unrelated]:
        axes = draw(entry_axes(mesh, rank), label=f"axes of {key!r}")
        entries.append(LayoutMapEntry(key, axes, draw(st.sampled_from(LAYOUT_MAP_FORMS), label=f"form of {key!r}")))
    entries = draw(st.permutations(entries), label="entry order")
    initial = TensorSpec(variable.shape, variable.dtype, draw(seeds, label="initial seed"))
    return LayoutMapExample(mesh, tuple(entries), variable, initial)


@st.composite
def defaults_examples(draw, world_size):
    mesh = draw(meshes(world_size), label="layout map's mesh")
    return DefaultsExample(mesh, draw(st.sampled_from(mesh.axis_names), label="batch dim name"))
