"""Ranks that survive leaky targets: every reply says how many threads and
process groups its rank holds, and the manager replaces a pool whose ranks
hold too much, where the caller allows it, before any rank reaches the
thread ceiling."""

import pytest
import torch.distributed as dist

from kdist_props.cluster import PoolManager
from kdist_props.cluster.pool import CEILING_VARIABLE, THREADS_PER_GLOO_GROUP, thread_ceiling
from kdist_props.contract.specs import SizeExample
from kdist_props.environment import ConfigError
from tests.selftest.conftest import OK_DEADLINE_S

pytestmark = pytest.mark.selftest

WORLD_SIZE = 2
GROUPS_PER_EXAMPLE = 8  # as a target that makes a group per variable would
THREADS_PER_EXAMPLE = THREADS_PER_GLOO_GROUP * GROUPS_PER_EXAMPLE
HEADROOM = 2 * THREADS_PER_EXAMPLE  # threads the next example may add: twice what one adds


def leak_groups(ctx, example: SizeExample) -> None:
    for _ in range(example.n):
        dist.new_group(list(range(ctx.world_size)))


@pytest.fixture
def manager():
    pools = PoolManager()
    yield pools
    pools.close_all()


def test_pool_is_replaced_before_leaked_threads_pile_up(manager):
    ceiling = thread_ceiling()
    pids, replaced = set(), 0
    # Examples enough to pass the ceiling three times over if nothing is replaced.
    for _ in range(3 * ceiling // THREADS_PER_EXAMPLE):
        replaced += manager.replace_if(WORLD_SIZE, lambda p: p.holds_too_much(HEADROOM))
        pool = manager.get(WORLD_SIZE)
        pids.update(pool.pids)
        pool.run(leak_groups, SizeExample(GROUPS_PER_EXAMPLE), deadline_s=OK_DEADLINE_S)
    assert replaced >= 2, f"expected the pool to be replaced as groups piled up, got {replaced} replacements"
    assert len(pids) == WORLD_SIZE * (replaced + 1), f"expected fresh ranks per replacement, saw pids {sorted(pids)}"
    assert manager.max_threads <= ceiling, (
        f"a rank held {manager.max_threads} threads (ceiling {ceiling}, headroom {HEADROOM})")


def test_pool_is_kept_where_the_caller_forbids_replacement(manager):
    pool = manager.get(WORLD_SIZE)
    groups = thread_ceiling() // THREADS_PER_GLOO_GROUP
    pool.run(leak_groups, SizeExample(groups), deadline_s=OK_DEADLINE_S)
    assert pool.holds_too_much(HEADROOM), f"{groups} leaked groups leave no headroom: {pool.leaked()}"
    assert manager.get(WORLD_SIZE) is pool, "replaced although the caller (a stateful program's step) gave no leave"
    usage = pool.leaked()
    assert usage.process_groups >= groups + 1, f"expected the world group and {groups} leaked ones, got {usage}"


def test_the_ceiling_is_overridden_for_the_sweep(monkeypatch):
    monkeypatch.setenv(CEILING_VARIABLE, "128")
    assert thread_ceiling() == 128
    monkeypatch.setenv(CEILING_VARIABLE, "none")
    assert thread_ceiling() == "none"
    monkeypatch.setenv(CEILING_VARIABLE, "lots")
    with pytest.raises(ConfigError, match=CEILING_VARIABLE):
        PoolManager()
