"""Chapter model variables (Tier B): `variable.scope`, `variable.read`, `ops.scope`,
on the variables of a model and on standalone variables (a LayoutMap entry or
an explicit layout)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles, training
from kdist_props.properties import tier_b
from kdist_props.contract.specs import MODEL_PARALLEL, ModelExample, ScopeMatmulExample, TensorSpec, VariableMatmulExample
from kdist_props.strategies.dtypes import MATMUL, dtypes
from kdist_props.strategies.models import model_distributions, model_specs
from kdist_props.strategies.tensors import seeds, standalone_variables
from kdist_props.contract.values import tensor_from


# The meshes of (world,) DataParallel and (1, world) ModelParallel: Keras 3.15.1
# raises on multi-axis DataParallel (its baseline), which would hide these
# facts there; variable.init and train.equivalence draw every factorisation.
def distributions(world_size, model):
    return model_distributions(world_size, model, every_factorisation=False)


def draw_model(kdist, data):
    model = data.draw(model_specs(), label="model")
    return model, data.draw(distributions(kdist.world_size, model), label="distribution")


def standalone_axes(example):
    """A standalone variable's axes: its explicit layout, else its LayoutMap entry."""
    if example.variable.preassigned is not None:
        return tuple(example.variable.preassigned)
    return oracles.expected_layout_map_axes(example.distribution, example.variable.path, example.variable.rank)


@pytest.mark.clause("variable.scope")
@given(data=st.data())
def test_variables_have_their_layout_and_chunk_shards(kdist, data):
    model, distribution = draw_model(kdist, data)
    example = ModelExample(model, distribution)
    initial = training.initial_weights(model)
    for rank, observed in enumerate(kdist.run(tier_b.model_storage, example)):
        paths = [path for path, _ in observed.variables]
        assert paths == list(initial), oracles.describe_mismatch(f"rank {rank} variable paths", list(initial),
                                                                 paths, example)
        oracles.assert_model_layout(observed, distribution, initial, rank, example)


@pytest.mark.clause("variable.scope")
@given(data=st.data())
def test_a_standalone_variable_has_its_layout_and_chunk_shard(kdist, data):
    example = data.draw(standalone_variables(kdist.world_size, trainable_ints=False), label="variable")
    axes = standalone_axes(example)
    placements = oracles.expected_placements(example.distribution.mesh, axes)
    full = tensor_from(example.initial)
    for rank, got in enumerate(kdist.run(tier_b.standalone_variable, example)):
        assert got.axes == axes, oracles.describe_mismatch(f"rank {rank} layout", axes, got.axes, example)
        local = oracles.expected_local_shard(full, example.distribution.mesh, placements, rank)
        oracles.assert_identical(got.local, local, f"rank {rank} local shard", example)


@pytest.mark.clause("variable.read")
@given(data=st.data())
def test_every_read_gives_the_full_value(kdist, data):
    model, distribution = draw_model(kdist, data)
    example = ModelExample(model, distribution)
    initial = training.initial_weights(model)
    for rank, observed in enumerate(kdist.run(tier_b.model_storage, example)):
        oracles.assert_model_reads(observed, initial, rank, example)


@pytest.mark.clause("variable.read")
@given(data=st.data())
def test_a_standalone_variable_reads_in_full(kdist, data):
    example = data.draw(standalone_variables(kdist.world_size, trainable_ints=False), label="variable")
    for rank, got in enumerate(kdist.run(tier_b.standalone_variable, example)):
        for how, value in got.reads:
            oracles.assert_identical(value, tensor_from(example.initial), f"rank {rank} read by {how}", example)


@pytest.mark.clause("ops.scope")
@given(data=st.data())
def test_matmul_with_a_sharded_kernel_equals_single_process(kdist, data):
    model, _ = draw_model(kdist, data)
    distribution = data.draw(distributions(kdist.world_size, model).filter(lambda d: d.kind == MODEL_PARALLEL),
                             label="model-parallel distribution")
    rows = data.draw(st.integers(1, 4), label="input rows")
    x = TensorSpec(shape=(rows, model.widths[0]), dtype=model.dtype, seed=data.draw(seeds, label="input seed"))
    example = ScopeMatmulExample(model, distribution, x)
    kernel = training.initial_weights(model)["d0/kernel"]
    expected = oracles.expected_matmul(tensor_from(x), kernel)
    for rank, got in enumerate(kdist.run(tier_b.scope_matmul, example)):
        oracles.assert_tensors_match(got.full, expected, f"rank {rank} matmul", example)


@pytest.mark.clause("ops.scope")
@given(data=st.data())
def test_matmul_with_a_standalone_variable_equals_single_process(kdist, data):
    dtype = data.draw(dtypes(MATMUL), label="dtype")
    target = data.draw(standalone_variables(kdist.world_size, trainable_ints=False, min_rank=2, max_rank=2,
                                            allowed_dtypes=(dtype,)), label="variable")
    rows = data.draw(st.integers(1, 4), label="input rows")
    x = TensorSpec(shape=(rows, target.variable.shape[0]), dtype=dtype, seed=data.draw(seeds, label="input seed"))
    example = VariableMatmulExample(target, x)
    expected = oracles.expected_matmul(tensor_from(x), tensor_from(target.initial))
    for rank, got in enumerate(kdist.run(tier_b.variable_matmul, example)):
        oracles.assert_tensors_match(got.full, expected, f"rank {rank} matmul", example)
