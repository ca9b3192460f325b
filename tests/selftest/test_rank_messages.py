"""What the driver makes of rank replies: a backend's dtype refusal only when a
harness probe of the same collective and dtype fails alike, one clear driver
error for a body that returns the wrong type, one traceback for ranks that
failed alike."""

import pytest
import torch
import torch.distributed as dist

from kdist_props.cluster import RankError
from kdist_props.cluster.errors import ObservationTypeError
from kdist_props.harness import limitations
from kdist_props.contract.specs import CollectiveProbe, SizeExample
from tests.selftest.conftest import OK_DEADLINE_S

pytestmark = pytest.mark.selftest

WORLD_SIZE = 2


# -- rank-side bodies (module level, so the ranks can import them) ------------


def broadcast_of_dtype(ctx, example: CollectiveProbe) -> None:
    dist.broadcast(torch.zeros(3, dtype=getattr(torch, example.dtype)), src=0)


def refuses_dtype_itself(ctx, example: CollectiveProbe) -> None:
    raise ValueError(f"Unsupported dtype {example.dtype}")


def returns_a_dict(ctx, example: SizeExample) -> SizeExample:
    return {"n": example.n}


# -- driver side ----------------------------------------------------------------------


def run(pools, body, example):
    return pools.get(WORLD_SIZE).run(body, example, deadline_s=OK_DEADLINE_S)


def proven_limitation(pools, body, example):
    """What the runner makes of a rank error: a BackendLimitation when proven, else None."""
    with pytest.raises(RankError) as caught:
        run(pools, body, example)
    return caught.value, limitations.prove(pools.get(WORLD_SIZE), caught.value, example, deadline_s=OK_DEADLINE_S)


def test_gloo_refusing_int16_broadcast_is_a_backend_limitation(pools):
    error, limitation = proven_limitation(pools, broadcast_of_dtype, CollectiveProbe("broadcast", "int16"))
    assert error.outcomes[0].refused is not None, f"the rank did not describe a refusal: {error.outcomes[0]}"
    assert isinstance(limitation, limitations.BackendLimitation), f"expected a proven limitation, got {limitation}"
    assert "refuses broadcast of int16 (harness probe)" in str(limitation), str(limitation)


def test_a_dtype_gloo_takes_is_no_limitation(pools):
    assert run(pools, broadcast_of_dtype, CollectiveProbe("broadcast", "int32")) == [None] * WORLD_SIZE


def test_a_targets_own_unsupported_dtype_error_is_a_target_failure(pools):
    error, limitation = proven_limitation(pools, refuses_dtype_itself, CollectiveProbe("broadcast", "int16"))
    assert limitation is None, f"expected a target failure, got {limitation!r}"
    assert error.outcomes[0].refused is None, "raised outside any torch.distributed collective: no refusal"
    assert error.reason().startswith("ValueError: Unsupported dtype int16"), error.reason()


def test_a_rank_sends_its_exception_typed(pools):
    error, _ = proven_limitation(pools, refuses_dtype_itself, CollectiveProbe("broadcast", "int16"))
    outcome = error.outcomes[1]
    assert (outcome.type, outcome.message, outcome.verdict) == ("ValueError", "Unsupported dtype int16", None), outcome
    assert "Traceback (most recent call last)" in outcome.traceback, outcome.traceback


def test_ranks_that_failed_alike_print_one_traceback(pools):
    with pytest.raises(RankError) as caught:
        run(pools, refuses_dtype_itself, CollectiveProbe("broadcast", "int16"))
    text = str(caught.value)
    assert "--- ranks 0, 1 (identical traceback) ---" in text, text
    assert text.count("Traceback (most recent call last)") == 1, text


def test_wrong_observation_type_is_one_error_in_the_driver(pools):
    pool = pools.get(WORLD_SIZE)
    with pytest.raises(ObservationTypeError) as caught:
        pool.run(returns_a_dict, SizeExample(3), deadline_s=OK_DEADLINE_S)
    message = str(caught.value)
    for fragment in ("test_rank_messages.returns_a_dict", "must return SizeExample", "dict from rank(s) [0, 1]"):
        assert fragment in message, f"expected {fragment!r} in: {message}"
    assert "Traceback" not in message, message
    assert pools.get(WORLD_SIZE) is pool and not pool.broken, "a wrongly typed reply must not cost the pool"
