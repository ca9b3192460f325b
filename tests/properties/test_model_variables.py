"""Chapter model variables (Tier B): `variable.scope`, `variable.read`, `ops.scope`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props import oracles, training
from kdist_props.properties import tier_b
from kdist_props.specs import MODEL_PARALLEL, TensorSpec
from kdist_props.strategies.models import model_distributions, model_specs
from kdist_props.strategies.tensors import seeds
from kdist_props.values import tensor_from


def draw_model(kdist, data):
    model = data.draw(model_specs(), label="model")
    return model, data.draw(model_distributions(kdist.world_size, model), label="distribution")


@pytest.mark.clause("variable.scope")
@given(data=st.data())
def test_variables_have_their_layout_and_chunk_shards(kdist, data):
    model, distribution = draw_model(kdist, data)
    example = {"model": model, "distribution": distribution}
    initial = training.initial_weights(model)
    for rank, observed in enumerate(kdist.run(tier_b.model_storage, example)):
        assert list(observed) == list(initial), oracles.describe_mismatch(
            f"rank {rank} variable paths", list(initial), list(observed), example)
        for path, got in observed.items():
            axes = oracles.expected_layout_map_axes(distribution, path, initial[path].ndim)
            assert got["axes"] == axes, oracles.describe_mismatch(f"rank {rank} {path} layout", axes,
                                                                  got["axes"], example)
            placements = oracles.expected_placements(distribution.mesh, axes)
            local = oracles.expected_local_shard(initial[path], distribution.mesh, placements, rank)
            oracles.assert_identical(got["local"], local, f"rank {rank} {path} local shard", example)


@pytest.mark.clause("variable.read")
@given(data=st.data())
def test_every_read_gives_the_full_value(kdist, data):
    model, distribution = draw_model(kdist, data)
    example = {"model": model, "distribution": distribution}
    initial = training.initial_weights(model)
    for rank, observed in enumerate(kdist.run(tier_b.model_storage, example)):
        for path, got in observed.items():
            for how, value in got["reads"].items():
                oracles.assert_identical(value, initial[path], f"rank {rank} {path} read by {how}", example)


@pytest.mark.clause("ops.scope")
@given(data=st.data())
def test_matmul_with_a_sharded_kernel_equals_single_process(kdist, data):
    model, _ = draw_model(kdist, data)
    distribution = data.draw(model_distributions(kdist.world_size, model).filter(lambda d: d.kind == MODEL_PARALLEL),
                             label="model-parallel distribution")
    rows = data.draw(st.integers(1, 4), label="input rows")
    x = TensorSpec(shape=(rows, model.widths[0]), dtype=model.dtype, seed=data.draw(seeds, label="input seed"))
    example = {"model": model, "distribution": distribution, "x": x}
    kernel = training.initial_weights(model)["d0/kernel"]
    expected = oracles.expected_matmul(tensor_from(x), kernel)
    for rank, got in enumerate(kdist.run(tier_b.scope_matmul, example)):
        oracles.assert_tensors_match(got["full"], expected, f"rank {rank} matmul", example)
