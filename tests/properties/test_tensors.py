"""Chapter tensors: `tensor.storage`, `data.input`, and inputs as users hand them
over: `tensor.inputs`, `tensor.input-unchanged`."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.properties import inputs, tier_a
from kdist_props.contract.specs import DISTRIBUTED_SOURCE_KINDS, PLAIN_SOURCE_KINDS, DataInputExample, StorageExample, \
    TensorSpec
from kdist_props.strategies.dtypes import dtypes
from kdist_props.strategies.inputs import distribute_examples, unchanged_examples
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.shapes import shapes
from kdist_props.strategies.tensors import laid_out_tensors, seeds
from kdist_props.contract.values import local_batch, tensor_from


@pytest.mark.clause("tensor.storage")
@given(data=st.data())
def test_each_rank_holds_its_chunk_and_the_whole_is_exact(kdist, data):
    mesh = data.draw(meshes(kdist.world_size), label="mesh")
    tensor, axes = data.draw(laid_out_tensors(mesh), label="tensor")
    example = StorageExample(mesh, tensor, axes)
    assert_chunk_shards(kdist.run(tier_a.tensor_storage, example), tensor_from(tensor), mesh, axes, example)


def assert_chunk_shards(observations, full, mesh, axes, example):
    """Every rank holds a DTensor of `axes`' placements, its torch.chunk shard, and `full` in all."""
    placements = oracles.expected_placements(mesh, axes)
    for rank, got in enumerate(observations):
        assert got.is_dtensor, oracles.describe_mismatch(f"rank {rank} result type", "DTensor", "plain", example)
        assert got.placements == placements, oracles.describe_mismatch(
            f"rank {rank} placements", placements, got.placements, example)
        expected_local = oracles.expected_local_shard(full, mesh, placements, rank)
        oracles.assert_identical(got.local, expected_local, f"rank {rank} local shard", example)
        oracles.assert_identical(got.full, full, f"rank {rank} full tensor", example)


def assert_distributes(kdist, example):
    observations = kdist.run(inputs.distribute_input, example)
    assert_chunk_shards(observations, tensor_from(example.source.tensor), example.mesh, example.axes, example)


# Plain and distributed inputs apart: a target that refuses one kind must not hide what it does to the other.
@pytest.mark.clause("tensor.inputs")
@given(data=st.data())
def test_any_plain_input_gives_its_chunk_shards(kdist, data):
    assert_distributes(kdist, data.draw(distribute_examples(kdist.world_size, PLAIN_SOURCE_KINDS), label="example"))


@pytest.mark.clause("tensor.inputs")
@given(data=st.data())
def test_a_distributed_input_is_redistributed(kdist, data):
    example = data.draw(distribute_examples(kdist.world_size, DISTRIBUTED_SOURCE_KINDS), label="example")
    assert_distributes(kdist, example)


def assert_input_unchanged(observations, example):
    for rank, got in enumerate(observations):
        oracles.assert_identical(got.value_after, got.value_before, f"rank {rank} input's value after the call",
                                 example)
        oracles.assert_identical(got.storage_after, got.storage_before, f"rank {rank} input's storage bytes after "
                                 "the call", example)


@pytest.mark.clause("tensor.input-unchanged")
@given(data=st.data())
def test_distribute_tensor_leaves_its_input_unchanged(kdist, data):
    example = data.draw(unchanged_examples(kdist.world_size, assign=False), label="example")
    assert_input_unchanged(kdist.run(inputs.input_unchanged, example), example)


@pytest.mark.clause("tensor.input-unchanged")
@given(data=st.data())
def test_assign_leaves_its_value_unchanged(kdist, data):
    example = data.draw(unchanged_examples(kdist.world_size, assign=True), label="example")
    assert_input_unchanged(kdist.run(inputs.input_unchanged, example), example)


@pytest.mark.clause("data.input")
@given(data=st.data())
def test_global_batch_is_the_rank_batches_in_mesh_order(kdist, data):
    mesh = data.draw(meshes(kdist.world_size, max_ndim=1), label="mesh")
    rank_of_batch = data.draw(st.integers(1, 3), label="batch rank")
    shape = data.draw(shapes(rank=rank_of_batch), label="per-rank batch shape")
    batch = TensorSpec(shape=shape, dtype=data.draw(dtypes(), label="dtype"), seed=data.draw(seeds, label="seed"))
    example = DataInputExample(mesh, batch, mesh.axis_names[0])
    # The device at mesh position i holds rows i*n..(i+1)*n of the global batch (JAX's
    # make_array_from_process_local_data): the ranks' batches in mesh order.
    expected = torch.cat([local_batch(batch, r) for r in mesh.ranks])
    for rank, got in enumerate(kdist.run(tier_a.data_input, example)):
        oracles.assert_identical(got.full, expected, f"rank {rank} global batch", example)
