"""Chapter variables: `variable.wrapping`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props import oracles
from kdist_props.properties import tier_a
from kdist_props.strategies.meshes import meshes
from kdist_props.strategies.tensors import laid_out_tensors
from kdist_props.values import is_float_or_complex, tensor_from


@pytest.mark.clause("variable.wrapping")
@given(data=st.data())
def test_only_float_variables_become_parameters(kdist, data):
    mesh = data.draw(meshes(kdist.world_size, identity_order=True), label="mesh")
    tensor, axes = data.draw(laid_out_tensors(mesh), label="variable value")
    trainable = data.draw(st.booleans(), label="trainable")
    example = {"mesh": mesh, "tensor": tensor, "axes": axes, "trainable": trainable}
    differentiable = is_float_or_complex(tensor.dtype)
    for rank, got in enumerate(kdist.run(tier_a.variable_wrapping, example)):
        assert got["is_parameter"] == differentiable, oracles.describe_mismatch(
            f"rank {rank} isinstance(value, nn.Parameter)", differentiable, got["is_parameter"], example)
        assert got["requires_grad"] == (trainable and differentiable), oracles.describe_mismatch(
            f"rank {rank} requires_grad", trainable and differentiable, got["requires_grad"], example)
        oracles.assert_identical(got["full"], tensor_from(tensor), f"rank {rank} full value", example)
