"""Hypothesis shrinks through the pool: a property that fails on one rank only,
and only from some input on, is reduced to exactly the smallest failing input.

The failing decision is taken on the rank, by bodies defined in this module:
the ranks import it by name (`tests.selftest.test_shrinking`), which works
because the zygote inherits the driver's sys.path, where pytest put the
repository root.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdist_props.cluster import RankDesync, RankError
from kdist_props.contract.specs import SizeExample
from tests.selftest.conftest import OK_DEADLINE_S

pytestmark = pytest.mark.selftest

THRESHOLD = 1234
FAULTY_RANK = 1
WORLD_SIZE = 2


# -- rank-side bodies (module level, so the ranks can import them) ------------


def raises_on_one_rank_from_threshold(ctx, example: SizeExample) -> int:
    n = example.n
    if ctx.rank == FAULTY_RANK and n >= THRESHOLD:
        raise ValueError(f"rank {ctx.rank} rejects n={n}")
    return n


def disagrees_on_one_rank_from_threshold(ctx, example: SizeExample) -> int:
    n = example.n
    return n + 1 if ctx.rank == FAULTY_RANK and n >= THRESHOLD else n


# -- driver side ----------------------------------------------------------------------


def shrink(pools, body, *, agree, expected_error):
    """Run a @given property that sends each n through the pool; return the error
    Hypothesis finally raised, its falsifying-example text, and every n tried."""
    tried = []

    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(n=st.integers(0, 10_000))
    def property_through_pool(n):
        tried.append(n)
        # Ask the manager each time, as the plugin's runner does.
        pools.get(WORLD_SIZE).run(body, SizeExample(n), deadline_s=OK_DEADLINE_S, agree=agree)

    with pytest.raises(expected_error) as caught:
        property_through_pool()
    # Hypothesis attaches the shrunk example to the error as a PEP 678 note.
    falsifying = "\n".join(getattr(caught.value, "__notes__", []))
    return caught.value, falsifying, tried


def assert_shrunk_to_threshold(falsifying, tried):
    failing = sorted({n for n in tried if n >= THRESHOLD})
    # Several distinct failing inputs went through the pool: it did shrink, not hit 1234 by luck.
    assert len(failing) > 1, f"expected Hypothesis to shrink through several failing n, got {failing}"
    assert f"n={THRESHOLD}," in falsifying, (
        f"expected the falsifying example n={THRESHOLD}, got:\n{falsifying or '(no note)'}\nafter {len(tried)} "
        f"examples, failing ones tried: {failing[:20]}")
    # Hypothesis replays the shrunk example last: the error it raised is that run's.
    assert tried[-1] == THRESHOLD, f"expected the final replay to be n={THRESHOLD}, got n={tried[-1]}"


def test_error_on_one_rank_shrinks_to_the_smallest_failing_input(pools):
    pool = pools.get(WORLD_SIZE)
    respawns = len(pools.respawns)
    error, falsifying, tried = shrink(pools, raises_on_one_rank_from_threshold, agree=False, expected_error=RankError)
    assert_shrunk_to_threshold(falsifying, tried)
    assert set(error.details) == {FAULTY_RANK}, f"expected only rank {FAULTY_RANK} to fail, got:\n{error}"
    assert f"ValueError: rank {FAULTY_RANK} rejects n={THRESHOLD}" in error.details[FAULTY_RANK], str(error)
    # A rank that raises leaves the pool in step: shrinking must not have cost a single respawn.
    assert pools.get(WORLD_SIZE) is pool and len(pools.respawns) == respawns, (
        f"the pool was replaced during shrinking ({len(pools.respawns) - respawns} respawns)")


def test_desync_on_one_rank_shrinks_to_the_smallest_failing_input(pools):
    pool = pools.get(WORLD_SIZE)
    error, falsifying, tried = shrink(pools, disagrees_on_one_rank_from_threshold, agree=True,
                                      expected_error=RankDesync)
    assert_shrunk_to_threshold(falsifying, tried)
    expected = {0: repr(THRESHOLD), 1: repr(THRESHOLD + 1)}
    assert error.details == expected, f"expected each rank's observation {expected}, got {error.details}"
    assert pools.get(WORLD_SIZE) is pool, "the pool was replaced during shrinking"
