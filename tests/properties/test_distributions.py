"""Chapter distributions as users build them: `layoutmap.values` (LayoutMap values
and keys as Keras documents them) and `distribution.defaults` (DataParallel() and
list_devices() with no arguments, ModelParallel with the LayoutMap's mesh)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.properties import distributions
from kdist_props.contract.specs import DistributionFacts
from kdist_props.strategies.layout_maps import defaults_examples, layout_map_examples
from kdist_props.contract.values import tensor_from


@pytest.mark.clause("layoutmap.values")
@given(data=st.data())
def test_a_layout_map_lays_out_a_variable_as_documented(kdist, data):
    example = data.draw(layout_map_examples(kdist.world_size), label="example")
    variable = example.variable
    axes, why_error = oracles.expected_layout_map_layout(example.entries, variable.path, variable.rank)
    for rank, got in enumerate(kdist.run(distributions.layout_map_variable, example)):
        came = f"{got.error_type}: {got.error}" if got.error_type else f"layout {got.axes}"
        if why_error:
            assert got.error_type == "ValueError" and f"'{variable.path}'" in got.error, oracles.describe_mismatch(
                f"rank {rank} making the variable ({why_error})", f"a ValueError naming '{variable.path}'", came,
                example)
            continue
        assert got.error_type is None and got.axes == axes, oracles.describe_mismatch(
            f"rank {rank} variable's layout", axes, came, example)
        placements = oracles.expected_placements(example.mesh, axes)
        local = oracles.expected_local_shard(tensor_from(example.initial), example.mesh, placements, rank)
        oracles.assert_identical(got.local, local, f"rank {rank} local shard", example)


@pytest.mark.clause("distribution.defaults")
@given(data=st.data())
def test_default_distributions_span_every_process(kdist, data):
    example = data.draw(defaults_examples(kdist.world_size), label="example")
    device_type = "cpu" if kdist.device == "cpu" else "gpu"
    devices = tuple(f"{device_type}:{r}" for r in range(kdist.world_size))
    mesh = example.mesh
    model_parallel = DistributionFacts(mesh.shape, mesh.axis_names, tuple(mesh.devices(device_type)),
                                       example.batch_dim_name)
    for rank, got in enumerate(kdist.run(distributions.defaults, example)):
        assert got.devices == devices, oracles.describe_mismatch(f"rank {rank} list_devices()", devices,
                                                                 got.devices, example)
        data_parallel = got.data_parallel
        spans = (data_parallel.shape, data_parallel.devices, data_parallel.batch_dim_name)
        expected = ((kdist.world_size,), devices, data_parallel.axis_names[0])
        assert spans == expected, oracles.describe_mismatch(
            f"rank {rank} DataParallel() mesh shape, devices and batch dim", expected, spans, example)
        assert got.model_parallel == model_parallel, oracles.describe_mismatch(
            f"rank {rank} ModelParallel(layout_map=..., batch_dim_name=...)", model_parallel, got.model_parallel,
            example)
