"""Chapter assignment (Tier B): `variable.assign`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props import oracles
from kdist_props.properties import tier_b
from kdist_props.specs import TensorSpec
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.tensors import distributions, seeds, variable_specs
from kdist_props.values import tensor_from


@pytest.mark.clause("variable.assign")
@given(data=st.data())
def test_assigning_a_plain_value_keeps_the_layout(kdist, data):
    mesh = data.draw(meshes(kdist.world_size, identity_order=True), label="mesh")
    variable = data.draw(variable_specs(mesh), label="variable")
    variable = type(variable)(**{**variable.__dict__, "preassigned": None})
    distribution = data.draw(distributions(mesh, variable), label="distribution")
    how = data.draw(st.sampled_from(["assign", "assign_add", "set_weights"]), label="how")
    if variable.dtype == "bool" and how == "assign_add":
        how = "assign"  # adding booleans is not an operation Keras defines
    kinds = ["numpy", "tensor"] + (["python"] if variable.rank == 0 else [])
    value_kind = data.draw(st.sampled_from(kinds), label="value kind")
    initial = TensorSpec(variable.shape, variable.dtype, data.draw(seeds, label="initial seed"))
    value = TensorSpec(variable.shape, variable.dtype, data.draw(seeds, label="value seed"))
    example = {"distribution": distribution, "variable": variable, "initial": initial, "value": value,
               "value_kind": value_kind, "how": how}
    expected = tensor_from(value) + tensor_from(initial) if how == "assign_add" else tensor_from(value)
    expected = expected.to(tensor_from(value).dtype)
    for rank, got in enumerate(kdist.run(tier_b.variable_assign, example)):
        assert got["layout_kept"], oracles.describe_mismatch(f"rank {rank} layout after {how}", "unchanged",
                                                             "changed", example)
        oracles.assert_identical(got["full"], expected, f"rank {rank} value after {how}", example)
