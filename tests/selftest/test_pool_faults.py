"""Rank pools under injected faults: each fault is reported as its own error
type with a readable per-rank report, and the next example always gets a
working pool, with nothing left of a pool that had to be killed."""

import pickle
import re
import sys
import types

import pytest

from kdist_props.cluster import RankCrash, RankDesync, RankError, RankHang
from kdist_props.cluster.errors import RankFailure
from kdist_props.properties import probes
from kdist_props.contract.specs import FaultExample
from tests.selftest.conftest import OK_DEADLINE_S, assert_reaped

pytestmark = pytest.mark.selftest

# Hang faults sleep forever: the deadline is the whole cost of the test.
HANG_DEADLINE_S = 1.0

# (world size, faulty rank): a middle rank at 4, so "the last rank" or "rank 0"
# cannot be baked into the reports by accident.
CASES = [pytest.param(2, 1, id="w2-rank1"), pytest.param(4, 2, id="w4-rank2")]


# -- helpers ----------------------------------------------------------------


def inject(pools, world_size, kind, rank, expected, *, deadline_s=OK_DEADLINE_S, agree=False, value=0):
    """Run fault `kind` on `rank`; return (the pool it ran on, the error), checking the error's exact type."""
    pool = pools.get(world_size)
    example = FaultExample(kind, rank, value)
    with pytest.raises(RankFailure) as caught:
        pool.run(probes.fault, example, deadline_s=deadline_s, agree=agree)
    error = caught.value
    assert type(error) is expected, (
        f"fault {example} on {world_size} ranks: expected {expected.__name__}, "
        f"got {type(error).__name__}:\n{error}"
    )
    return pool, error


def assert_mentions(error, *fragments, rank=None):
    """Each fragment appears in the error's text (or in `rank`'s section of it)."""
    text = str(error) if rank is None else error.details.get(rank, "")
    where = "the report" if rank is None else f"rank {rank}'s section"
    for fragment in fragments:
        assert fragment in text, f"expected {fragment!r} in {where} of {type(error).__name__}; got:\n{error}"


def assert_ranks_reported(error, ranks):
    assert set(error.details) == set(ranks), (
        f"expected a section for rank(s) {sorted(ranks)}, got {sorted(error.details)}:\n{error}"
    )
    # "--- rank 1 ---", or "--- ranks 0, 2 (identical traceback) ---" for ranks that failed alike.
    labelled = {int(r) for label in re.findall(r"^--- ranks? ([\d, ]+)", str(error), re.M)
                for r in label.split(",") if r.strip()}
    assert labelled == set(ranks), f"expected rank labels for {sorted(ranks)}, found {sorted(labelled)} in:\n{error}"


def assert_next_example_works(pools, world_size, old_pool, *, pool_survives, after):
    """The pool is kept after a failure every rank answered, replaced after any
    other; a replaced pool has left no process behind; the next example works."""
    if pool_survives:
        assert not old_pool.broken, f"after {after}: the pool was marked dead, but every rank had answered"
        assert pools.get(world_size) is old_pool, f"after {after}: the pool was replaced needlessly"
    else:
        assert old_pool.broken, f"after {after}: the pool is still marked live"
        # Pool.kill reaps through the zygote before raising, so not even a zombie may remain.
        assert_reaped(old_pool.pids, f"ranks of the pool killed after {after}")
    pool = pools.get(world_size)
    observations = pool.run(probes.rank_identity, None, deadline_s=OK_DEADLINE_S)
    got = [(o.rank, o.world_size, o.pid) for o in observations]
    expected = [(r, world_size, pid) for r, pid in enumerate(pool.pids)]
    assert got == expected, f"rank_identity after {after}: expected (rank, world size, pid) {expected}, got {got}"


def others(world_size, rank):
    return [r for r in range(world_size) if r != rank]


# -- one test per fault kind ---------------------------------------------------


@pytest.mark.parametrize("world_size, rank", CASES)
def test_raise_is_a_rank_error_with_that_ranks_traceback(pools, world_size, rank):
    pool, error = inject(pools, world_size, "raise", rank, RankError)
    assert_ranks_reported(error, [rank])  # the ranks that returned normally stay out of the report
    assert_mentions(error, f"rank(s) [{rank}] of {world_size} raised")
    assert_mentions(error, "Traceback", "in fault", f"ValueError: injected failure on rank {rank}", rank=rank)
    assert_next_example_works(pools, world_size, pool, pool_survives=True, after="raise")


@pytest.mark.parametrize("world_size, rank", CASES)
def test_raise_before_collective_names_the_ranks_left_blocked(pools, world_size, rank):
    pool, error = inject(pools, world_size, "raise-before-collective", rank, RankError)
    blocked = others(world_size, rank)
    assert_ranks_reported(error, range(world_size))
    assert_mentions(error, f"rank(s) [{rank}] raised and rank(s) {blocked} then stayed blocked")
    assert_mentions(error, f"ValueError: injected failure on rank {rank}", rank=rank)
    for r in blocked:  # the stack shows where the others wait: the barrier the faulty rank skipped
        assert_mentions(error, "in barrier", "in fault", rank=r)
    assert_next_example_works(pools, world_size, pool, pool_survives=False, after="raise-before-collective")


@pytest.mark.parametrize("world_size, rank", CASES)
def test_hang_is_a_rank_hang_with_the_stack_of_the_hung_rank(pools, world_size, rank):
    pool, error = inject(pools, world_size, "hang", rank, RankHang, deadline_s=HANG_DEADLINE_S)
    assert_ranks_reported(error, [rank])  # only the hung rank gave no reply
    assert_mentions(error, f"rank(s) [{rank}] of {world_size} gave no reply within the {HANG_DEADLINE_S:g} s")
    assert_mentions(error, "Current thread", "in fault", rank=rank)  # a faulthandler dump
    assert_next_example_works(pools, world_size, pool, pool_survives=False, after="hang")


@pytest.mark.parametrize("world_size, rank", CASES)
def test_hang_in_collective_is_a_rank_hang_with_every_ranks_stack(pools, world_size, rank):
    pool, error = inject(pools, world_size, "hang-in-collective", rank, RankHang, deadline_s=HANG_DEADLINE_S)
    assert_ranks_reported(error, range(world_size))
    assert_mentions(error, f"rank(s) {list(range(world_size))} of {world_size} gave no reply")
    for r in range(world_size):
        assert_mentions(error, "Current thread", "in fault", rank=r)
    for r in others(world_size, rank):
        assert_mentions(error, "in barrier", rank=r)
    assert_next_example_works(pools, world_size, pool, pool_survives=False, after="hang-in-collective")


@pytest.mark.parametrize("world_size, rank", CASES)
def test_exit_is_a_rank_crash_with_the_exit_code(pools, world_size, rank):
    pool, error = inject(pools, world_size, "exit", rank, RankCrash)
    assert_ranks_reported(error, [rank])
    assert_mentions(error, f"rank(s) [{rank}] of {world_size} died during the example")
    assert_mentions(error, "exited with code 3", rank=rank)
    assert_next_example_works(pools, world_size, pool, pool_survives=False, after="exit")


@pytest.mark.parametrize("world_size, rank", CASES)
def test_sigkill_is_a_rank_crash_naming_the_signal(pools, world_size, rank):
    pool, error = inject(pools, world_size, "sigkill", rank, RankCrash)
    assert_ranks_reported(error, [rank])
    assert_mentions(error, "killed by SIGKILL", rank=rank)
    assert_next_example_works(pools, world_size, pool, pool_survives=False, after="sigkill")


@pytest.mark.parametrize("world_size, rank", CASES)
def test_segfault_is_a_rank_crash_naming_the_signal_with_the_crash_stack(pools, world_size, rank):
    pool, error = inject(pools, world_size, "segfault", rank, RankCrash)
    assert_ranks_reported(error, [rank])
    # faulthandler writes the crashing Python stack to the rank's log; the report carries its tail.
    assert_mentions(error, "killed by SIGSEGV", "Fatal Python error: Segmentation fault", "in fault", rank=rank)
    assert_next_example_works(pools, world_size, pool, pool_survives=False, after="segfault")


@pytest.mark.parametrize("world_size, rank", CASES)
def test_desync_is_a_rank_desync_showing_every_ranks_value(pools, world_size, rank):
    pool, error = inject(pools, world_size, "desync", rank, RankDesync, agree=True, value=41)
    assert_mentions(error, f"rank(s) [{rank}] returned something other than rank 0")
    expected = {r: repr(42 if r == rank else 41) for r in range(world_size)}
    assert error.details == expected, f"expected each rank's value {expected}, got {error.details}"
    assert_next_example_works(pools, world_size, pool, pool_survives=True, after="desync")


def test_desync_goes_unnoticed_without_agree(pools):
    """agree=False: differing observations are the body's business, not an error."""
    got = pools.get(2).run(probes.fault, FaultExample("desync", 1, 41),
                           deadline_s=OK_DEADLINE_S)
    assert got == [41, 42], f"expected [41, 42] (rank 1 adds one), got {got}"


# -- the first line of a report ----------------------------------------------------

# What the first line of each report must say. pytest's short summary
# ("FAILED test - RankHang: ...") shows only this line, so it has to name the
# cause, not the last line of some stack dump.
HEADLINES = {
    "raise": (RankError, "ValueError: injected failure on rank 1"),
    "raise-before-collective": (RankError, "ValueError: injected failure on rank 1"),
    "hang": (RankHang, "gave no reply"),
    "hang-in-collective": (RankHang, "gave no reply"),
    "exit": (RankCrash, "exited with code 3"),
    "sigkill": (RankCrash, "killed by SIGKILL"),
    "segfault": (RankCrash, "killed by SIGSEGV"),
    "desync": (RankDesync, "returned something other than rank 0"),
}
# Lines that say nothing about the failure: the outermost frame of every
# faulthandler dump, and the module list faulthandler prints after a crash.
NOISE = ('File "<frozen runpy>"', "Extension modules:")

@pytest.mark.parametrize("kind", list(HEADLINES))
def test_first_line_of_the_report_names_the_cause(pools, kind):
    expected, fragment = HEADLINES[kind]
    deadline_s = HANG_DEADLINE_S if kind.startswith("hang") else OK_DEADLINE_S
    _, error = inject(pools, 2, kind, 1, expected, deadline_s=deadline_s, agree=True)
    headline = str(error).splitlines()[0]
    assert fragment in headline, f"fault {kind}: expected {fragment!r} in the first line, got {headline!r}"
    noise = [n for n in NOISE if n in headline]
    assert not noise, f"fault {kind}: the first line quotes {noise}: {headline!r}"


# -- state across examples ----------------------------------------------------


def remember(pool, *, stateful):
    return pool.run(probes.remember, None, deadline_s=OK_DEADLINE_S, stateful=stateful)


def fresh_pool(pools, world_size):
    """A pool whose ranks hold no state: a stateless example ends with a reset."""
    pool = pools.get(world_size)
    pool.run(probes.noop, None, deadline_s=OK_DEADLINE_S)
    return pool


@pytest.mark.parametrize("world_size", [2, 4])
def test_stateful_examples_keep_rank_state(pools, world_size):
    pool = fresh_pool(pools, world_size)
    got = [remember(pool, stateful=True) for _ in range(3)]
    expected = [[n] * world_size for n in (1, 2, 3)]
    fresh_pool(pools, world_size)  # leave no state to the next test
    assert got == expected, f"remember x3 with stateful=True: expected {expected}, got {got}"


@pytest.mark.parametrize("world_size", [2, 4])
def test_stateless_examples_start_from_empty_state(pools, world_size):
    pool = fresh_pool(pools, world_size)
    got = [remember(pool, stateful=False) for _ in range(3)]
    expected = [[1] * world_size] * 3
    assert got == expected, f"remember x3 with stateful=False: expected {expected}, got {got}"


def test_stateless_example_does_not_inherit_state_from_stateful_ones(pools):
    pool = fresh_pool(pools, 2)
    remember(pool, stateful=True)
    remember(pool, stateful=True)
    got = remember(pool, stateful=False)
    fresh_pool(pools, 2)
    assert got == [1, 1], f"stateless remember after two stateful ones: expected [1, 1], got {got}"


# -- bodies that cannot travel ------------------------------------------------------

DRIVER_ONLY_MODULE = "kdist_selftest_driver_only"


def _driver_only_body(ctx, example):
    return "unreachable"


@pytest.fixture
def driver_only_body(monkeypatch):
    """A body that pickles by reference to a module that exists only in the driver."""
    module = types.ModuleType(DRIVER_ONLY_MODULE)
    body = types.FunctionType(_driver_only_body.__code__, module.__dict__, "body")
    body.__module__, body.__qualname__ = DRIVER_ONLY_MODULE, "body"  # where pickle will look it up
    module.body = body
    monkeypatch.setitem(sys.modules, DRIVER_ONLY_MODULE, module)
    return body


def test_body_the_ranks_cannot_import_is_a_rank_error_on_every_rank(pools, driver_only_body):
    world_size = 2
    pool = pools.get(world_size)
    with pytest.raises(RankError) as caught:
        pool.run(driver_only_body, {}, deadline_s=OK_DEADLINE_S)
    assert_ranks_reported(caught.value, range(world_size))
    for r in range(world_size):
        assert_mentions(caught.value, f"No module named '{DRIVER_ONLY_MODULE}'", rank=r)
    assert_next_example_works(pools, world_size, pool, pool_survives=True, after="an unimportable body")


def test_unpicklable_body_fails_in_the_driver_and_spares_the_pool(pools):
    pool = pools.get(2)
    offset = 1

    def closure(ctx, example):  # a local function: pickle cannot name it
        return ctx.rank + offset

    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as caught:
        pool.run(closure, {}, deadline_s=OK_DEADLINE_S)
    assert "closure" in str(caught.value), f"expected the error to name the body, got {caught.value!r}"
    assert_next_example_works(pools, 2, pool, pool_survives=True, after="an unpicklable body")
