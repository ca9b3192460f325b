"""Chapter explicit layouts (Tier B): `variable.explicit-layout`, keras.Variable(...,
layout=...) as users make it: with no distribution at all, under DataParallel or
ModelParallel, from a tensor, numpy or a DTensor; then read, assigned and multiplied."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.properties import tier_b
from kdist_props.strategies.inputs import explicit_variable_examples
from kdist_props.contract.values import tensor_from


@pytest.mark.clause("variable.explicit-layout")
@given(data=st.data())
def test_a_variable_keeps_its_explicit_layout_and_value(kdist, data):
    example = data.draw(explicit_variable_examples(kdist.world_size), label="example")
    axes = example.variable.preassigned
    placements = oracles.expected_placements(example.mesh, axes)
    initial = tensor_from(example.initial.tensor)
    for rank, got in enumerate(kdist.run(tier_b.explicit_variable, example)):
        made = got.made
        assert made.axes == axes, oracles.describe_mismatch(f"rank {rank} layout", axes, made.axes, example)
        local = oracles.expected_local_shard(initial, example.mesh, placements, rank)
        oracles.assert_identical(made.local, local, f"rank {rank} local shard", example)
        for how, value in made.reads:
            oracles.assert_identical(value, initial, f"rank {rank} read by {how}", example)
        current = initial
        for i, (step, (step_axes, step_placements, full)) in enumerate(zip(example.steps, got.after_steps)):
            current = oracles.expected_after_assign(current, step.how, tensor_from(step.value))
            assert (step_axes, step_placements) == (made.axes, made.placements), oracles.describe_mismatch(
                f"rank {rank} layout after step {i} ({step.how})", (made.axes, made.placements),
                (step_axes, step_placements), example)
            oracles.assert_identical(full, current, f"rank {rank} value after step {i} ({step.how})", example)
        if example.x is not None:
            expected = oracles.expected_matmul(tensor_from(example.x), current)
            oracles.assert_tensors_match(got.matmul, expected, f"rank {rank} matmul(x, variable)", example)
