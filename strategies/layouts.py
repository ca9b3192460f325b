"""Layouts (one mesh axis name or None per tensor dim) for a mesh, valid or not."""

from hypothesis import strategies as st


@st.composite
def layouts(draw, mesh, rank):
    """Each mesh axis used at most once; the rest of the dims replicated."""
    slots = list(range(rank)) + [None] * len(mesh.axis_names)
    axes = [None] * rank
    for name in mesh.axis_names:
        dim = draw(st.sampled_from(slots), label=f"dim sharded on {name!r}")
        if dim is not None and axes[dim] is None:
            axes[dim] = name
    return tuple(axes)


@st.composite
def invalid_layouts(draw, mesh, rank):
    """(axes, offending name): an axis name the mesh lacks, or one mesh axis used on two dims."""
    problems = ["unknown"] + (["repeated"] if rank >= 2 else [])
    problem = draw(st.sampled_from(problems), label="layout problem")
    axes = list(draw(layouts(mesh, rank), label="base layout"))
    if problem == "unknown":
        name = draw(st.from_regex(r"[a-z]{1,6}", fullmatch=True).filter(lambda n: n not in mesh.axis_names),
                    label="unknown axis")
        axes[draw(st.integers(0, rank - 1), label="dim of unknown axis")] = name
    else:
        name = draw(st.sampled_from(mesh.axis_names), label="repeated axis")
        first, second = draw(st.lists(st.integers(0, rank - 1), min_size=2, max_size=2, unique=True),
                             label="dims of repeated axis")
        axes = [None if a == name else a for a in axes]
        axes[first] = axes[second] = name
    return tuple(axes), name
