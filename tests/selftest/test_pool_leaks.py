"""Ranks that survive leaky targets: every reply says how many threads and
process groups its rank holds, and the manager replaces a pool whose ranks
hold too much, where the caller allows it, before any rank reaches the
thread ceiling."""

import pytest
import torch.distributed as dist

from kdist_props.cluster import PoolManager
from kdist_props.cluster.pool import THREAD_CEILING
from kdist_props.contract.specs import SizeExample
from tests.selftest.conftest import OK_DEADLINE_S

pytestmark = pytest.mark.selftest

WORLD_SIZE = 2
GROUPS_PER_EXAMPLE = 3  # as a target that makes a group per variable would
HEADROOM = 2 * 3 * GROUPS_PER_EXAMPLE  # threads the next example may add: twice what one adds (3 per gloo group)


def leak_groups(ctx, example: SizeExample) -> None:
    for _ in range(example.n):
        dist.new_group(list(range(ctx.world_size)))


@pytest.fixture
def manager():
    pools = PoolManager()
    yield pools
    pools.close_all()


def test_pool_is_replaced_before_leaked_threads_pile_up(manager):
    pids, replaced = set(), 0
    for _ in range(20):
        replaced += manager.replace_if(WORLD_SIZE, lambda p: p.holds_too_much(HEADROOM))
        pool = manager.get(WORLD_SIZE)
        pids.update(pool.pids)
        pool.run(leak_groups, SizeExample(GROUPS_PER_EXAMPLE), deadline_s=OK_DEADLINE_S)
    # 20 examples leave 60 groups (~180 threads) per rank if nothing is replaced.
    assert replaced >= 2, f"expected the pool to be replaced as groups piled up, got {replaced} replacements"
    assert len(pids) == WORLD_SIZE * (replaced + 1), f"expected fresh ranks per replacement, saw pids {sorted(pids)}"
    assert manager.max_threads <= THREAD_CEILING, (
        f"a rank held {manager.max_threads} threads (ceiling {THREAD_CEILING}, headroom {HEADROOM})")


def test_pool_is_kept_where_the_caller_forbids_replacement(manager):
    pool = manager.get(WORLD_SIZE)
    pool.run(leak_groups, SizeExample(16), deadline_s=OK_DEADLINE_S)
    assert pool.holds_too_much(HEADROOM), f"16 leaked groups (48 threads) leave no headroom: {pool.leaked()}"
    assert manager.get(WORLD_SIZE) is pool, "replaced although the caller (a stateful program's step) gave no leave"
    usage = pool.leaked()
    assert usage.process_groups >= 17, f"expected the world group and 16 leaked ones, got {usage}"
