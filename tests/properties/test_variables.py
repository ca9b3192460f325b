"""Chapter variables: `variable.wrapping`, on keras.Variable as a user creates it.

Every dtype, trainable or not, with an explicit layout, a LayoutMap entry or
neither, under DataParallel and ModelParallel scopes. One assertion per
concern, so that one bug (an int that cannot be trainable) does not hide
another (a float that loses its gradient, a value that changes).

Keras' torch Variable wraps every value in nn.Parameter, ints included (with
requires_grad=False), in every release and with no distribution at all: that
is harmless and not checked. What breaks users is checked: a raise, an int
that requires grad, and a trainable float that is not a Parameter at either
level a branch may put it (around the DTensor, or inside it).
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.properties import tier_a
from kdist_props.strategies.tensors import standalone_variables
from kdist_props.contract.values import is_float_or_complex, tensor_from


@pytest.mark.clause("variable.wrapping")
@given(data=st.data())
def test_any_variable_keeps_its_value_and_only_floats_get_gradients(kdist, data):
    example = data.draw(standalone_variables(kdist.world_size), label="variable")
    variable = example.variable
    differentiable = is_float_or_complex(variable.dtype)
    # Creating never raises: an error fails the example as a RankError with its type.
    for rank, got in enumerate(kdist.run(tier_a.variable_wrapping, example)):
        assert got.requires_grad == (variable.trainable and differentiable), oracles.describe_mismatch(
            f"rank {rank} requires_grad", variable.trainable and differentiable, got.requires_grad, example)
        if variable.trainable and differentiable:
            assert got.is_parameter, oracles.describe_mismatch(
                f"rank {rank} trainable variable is an nn.Parameter", True, got.is_parameter, example)
        oracles.assert_identical(got.full, tensor_from(example.initial), f"rank {rank} value", example)
