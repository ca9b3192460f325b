"""Chapter layout: `layout.variable` and `layout.placements`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.properties import tier_a
from kdist_props.contract.specs import DATA_PARALLEL, DistributionSpec, LayoutObservation, PlacementsExample, \
    VariableLayoutExample
from kdist_props.strategies.layouts import invalid_layouts, layouts
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.tensors import distributions, variable_specs


def assert_layout_follows(kdist, distribution, variable):
    """Every rank sees the layout the distribution must give `variable`."""
    mesh = distribution.mesh
    devices = tuple(mesh.devices("cpu" if kdist.device == "cpu" else "gpu"))
    expected = LayoutObservation("TensorLayout", oracles.expected_variable_axes(distribution, variable),
                                 (mesh.shape, mesh.axis_names, devices))
    example = VariableLayoutExample(distribution, variable)
    for rank, layout in enumerate(kdist.run(tier_a.variable_layout, example, agree=True)):
        assert layout == expected, oracles.describe_mismatch(f"rank {rank} layout", expected, layout, example)


@pytest.mark.clause("layout.variable")
@given(data=st.data())
def test_variable_layout_follows_the_distribution(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    variable = data.draw(variable_specs(mesh), label="variable")
    distribution = data.draw(distributions(mesh, variable), label="distribution")
    assert_layout_follows(kdist, distribution, variable)


@pytest.mark.clause("layout.variable")
@given(data=st.data())
def test_data_parallel_on_a_multi_axis_mesh_replicates(kdist, data):
    """Keras documents DataParallel on a mesh of several axes (the first one
    shards the batch): it must construct, and replicate variables. Drawn apart
    from the other layout examples so that a failure here shows once."""
    mesh = data.draw(meshes(kdist.world_size, min_ndim=2), label="multi-axis mesh")
    variable = data.draw(variable_specs(mesh), label="variable")
    distribution = DistributionSpec(DATA_PARALLEL, mesh, batch_dim_name=mesh.axis_names[0])
    assert_layout_follows(kdist, distribution, variable)


@pytest.mark.clause("layout.placements")
@given(data=st.data())
def test_placements_shard_where_the_layout_names_an_axis(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    axes = data.draw(st.integers(0, 4).flatmap(lambda rank: layouts(mesh, rank)), label="axes")
    example = PlacementsExample(mesh, axes)
    expected = oracles.expected_placements(mesh, axes)
    for rank, got in enumerate(kdist.run(tier_a.layout_placements, example, agree=True)):
        if got.unreadable is not None:
            kdist.incompatible(got.unreadable)
        assert got.error is None, oracles.describe_mismatch(f"rank {rank} placements", expected,
                                                            f"an error: {got.error}", example)
        assert got.placements == expected, oracles.describe_mismatch(f"rank {rank} placements", expected,
                                                                     got.placements, example)


@pytest.mark.clause("layout.placements")
@given(data=st.data())
def test_invalid_layout_is_a_value_error_naming_the_axis(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    axes, offender = data.draw(st.integers(1, 4).flatmap(lambda rank: invalid_layouts(mesh, rank)),
                               label="invalid axes")
    example = PlacementsExample(mesh, axes)
    for rank, got in enumerate(kdist.run(tier_a.layout_placements, example)):
        # Returning anything, readable or not, breaks a contract that asks for an error.
        assert got.error is not None, oracles.describe_mismatch(
            f"rank {rank}", "ValueError", f"no ValueError: returned {got.unreadable or got.placements}", example)
        assert offender in got.error, oracles.describe_mismatch(
            f"rank {rank} error message", f"a message naming {offender!r}", got.error, example)
