"""Chapter ops: `ops.matmul`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import oracles
from kdist_props.properties import tier_a
from kdist_props.contract.specs import MatmulExample
from kdist_props.strategies.tensors import matmul_cases
from kdist_props.contract.values import tensor_from


@pytest.mark.clause("ops.matmul")
@given(data=st.data())
def test_matmul_of_any_operand_mix_equals_single_process_matmul(kdist, data):
    mesh, kind, a, b = data.draw(matmul_cases(kdist.world_size), label="matmul case")
    example = MatmulExample(mesh, kind, a, b)
    expected = oracles.expected_matmul(tensor_from(a.tensor), tensor_from(b.tensor))
    for rank, got in enumerate(kdist.run(tier_a.matmul, example)):
        oracles.assert_tensors_match(got.full, expected, f"rank {rank} matmul", example)
