"""Chapter assignment (Tier B): `variable.assign`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.properties import tier_b
from kdist_props.contract.specs import AssignExample, TensorSpec
from kdist_props.strategies.tensors import seeds, standalone_variables
from kdist_props.contract.values import tensor_from


@pytest.mark.clause("variable.assign")
@given(data=st.data())
def test_assigning_a_plain_value_keeps_the_layout(kdist, data):
    target = data.draw(standalone_variables(kdist.world_size, trainable_ints=False), label="variable")
    variable = target.variable
    how = data.draw(st.sampled_from(["assign", "assign_add", "set_weights"]), label="how")
    if variable.dtype == "bool" and how == "assign_add":
        how = "assign"  # adding booleans is not an operation Keras defines
    kinds = ["numpy", "tensor"] + (["python"] if variable.rank == 0 else [])
    value_kind = data.draw(st.sampled_from(kinds), label="value kind")
    value = TensorSpec(variable.shape, variable.dtype, data.draw(seeds, label="value seed"))
    example = AssignExample(target, value, value_kind, how)
    expected = tensor_from(value) + tensor_from(target.initial) if how == "assign_add" else tensor_from(value)
    expected = expected.to(tensor_from(value).dtype)
    for rank, got in enumerate(kdist.run(tier_b.variable_assign, example)):
        assert got.layout_kept, oracles.describe_mismatch(f"rank {rank} layout after {how}", "unchanged",
                                                          "changed", example)
        oracles.assert_identical(got.full, expected, f"rank {rank} value after {how}", example)
