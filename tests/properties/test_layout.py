"""Chapter layout: `layout.variable` and `layout.placements`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props import oracles
from kdist_props.properties import tier_a
from kdist_props.strategies.layouts import invalid_layouts, layouts
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.tensors import distributions, variable_specs


@pytest.mark.clause("layout.variable")
@given(data=st.data())
def test_variable_layout_follows_the_distribution(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    variable = data.draw(variable_specs(mesh), label="variable")
    distribution = data.draw(distributions(mesh, variable), label="distribution")
    example = {"distribution": distribution, "variable": variable}
    expected = {
        "type": "TensorLayout",
        "axes": oracles.expected_variable_axes(distribution, variable),
        "mesh": (mesh.shape, mesh.axis_names, tuple(mesh.devices("cpu" if kdist.session.device == "cpu" else "gpu"))),
    }
    for rank, layout in enumerate(kdist.run(tier_a.variable_layout, example, agree=True)):
        assert layout == expected, oracles.describe_mismatch(f"rank {rank} layout", expected, layout, example)


@pytest.mark.clause("layout.placements")
@given(data=st.data())
def test_placements_shard_where_the_layout_names_an_axis(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    axes = data.draw(st.integers(0, 4).flatmap(lambda rank: layouts(mesh, rank)), label="axes")
    example = {"mesh": mesh, "axes": axes}
    expected = {"placements": oracles.expected_placements(mesh, axes)}
    for rank, got in enumerate(kdist.run(tier_a.layout_placements, example, agree=True)):
        assert got == expected, oracles.describe_mismatch(f"rank {rank} placements", expected, got, example)


@pytest.mark.clause("layout.placements")
@given(data=st.data())
def test_invalid_layout_is_a_value_error_naming_the_axis(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    axes, offender = data.draw(st.integers(1, 4).flatmap(lambda rank: invalid_layouts(mesh, rank)),
                               label="invalid axes")
    example = {"mesh": mesh, "axes": axes}
    for rank, got in enumerate(kdist.run(tier_a.layout_placements, example)):
        assert "error" in got, oracles.describe_mismatch(f"rank {rank}", "ValueError", got, example)
        assert offender in got["error"], oracles.describe_mismatch(
            f"rank {rank} error message", f"a message naming {offender!r}", got["error"], example)
