"""Randomized fault injection: faults of every kind on random ranks and world
sizes, mixed with ordinary examples, on one PoolManager. Every result is
checked, every killed pool must be gone, and closing the manager must leave no
process behind.

KDIST_STRESS_FAULTS sets the number of faults (default 100), KDIST_STRESS_SEED
the seed (printed, so a failing sequence can be replayed).
"""

import os
import random
from collections import Counter

import psutil
import pytest
import torch

from kdist_props.cluster import PoolManager, RankCrash, RankDesync, RankError, RankHang
from kdist_props.cluster.errors import RankFailure
from kdist_props.properties import probes
from kdist_props.contract.specs import FaultExample, RankIdentity, SizeExample
from tests.selftest.conftest import OK_DEADLINE_S, assert_reaped, describe

pytestmark = [pytest.mark.selftest, pytest.mark.stress]

FAULTS = int(os.environ.get("KDIST_STRESS_FAULTS", "100"))
SEED = int(os.environ.get("KDIST_STRESS_SEED", "20240611"))
WORLD_SIZES = (1, 2, 4)
HANG_DEADLINE_S = 0.5
FAULT_SHARE = 1 / 3

# kind -> the exact error it must raise
EXPECTED_ERROR = {
    "raise": RankError,
    "raise-before-collective": RankError,
    "hang": RankHang,
    "hang-in-collective": RankHang,
    "exit": RankCrash,
    "sigkill": RankCrash,
    "segfault": RankCrash,
    "desync": RankDesync,
}
ORDINARY = ("noop", "rank_identity", "small_dtensor_matmul")


def valid_world_sizes(kind):
    # One rank cannot disagree with itself.
    return [ws for ws in WORLD_SIZES if ws > 1] if kind == "desync" else list(WORLD_SIZES)


def pool_survives(kind, world_size):
    """Whether every rank still answers after this fault, so the pool is kept."""
    if kind == "raise-before-collective":
        return world_size == 1  # alone, there is no collective to leave anyone blocked in
    return kind in ("raise", "desync")


def schedule(rng, faults):
    """The example sequence: (kind, world size, example); about FAULT_SHARE faults.

    Fault kinds come from a reshuffled bag, so every kind appears once per
    len(EXPECTED_ERROR) faults, in random order.
    """
    steps, bag, injected = [], [], 0
    while injected < faults:
        if rng.random() < FAULT_SHARE:
            if not bag:
                bag = rng.sample(list(EXPECTED_ERROR), len(EXPECTED_ERROR))
            kind = bag.pop()
            world_size = rng.choice(valid_world_sizes(kind))
            steps.append((kind, world_size, FaultExample(kind, rng.randrange(world_size), 7)))
            injected += 1
        else:
            kind = rng.choice(ORDINARY)
            steps.append((kind, rng.choice(WORLD_SIZES), SizeExample(rng.randint(1, 8))))
    return steps


def expected_matmul(n):
    a = torch.arange(n * n, dtype=torch.float32).reshape(n, n)
    return a @ a.T


def check_ordinary(pools, step, kind, world_size, example):
    pool = pools.get(world_size)
    body = getattr(probes, kind)
    got = pool.run(body, example, deadline_s=OK_DEADLINE_S)
    where = f"step {step}: {kind}({example}) on {world_size} ranks"
    assert len(got) == world_size, f"{where}: expected {world_size} observations, got {len(got)}"
    if kind == "noop":
        assert got == [None] * world_size, f"{where}: expected None from every rank, got {got}"
    elif kind == "rank_identity":
        expected = [RankIdentity(r, world_size, pid) for r, pid in enumerate(pool.pids)]
        assert got == expected, f"{where}: expected {expected}, got {got}"
    else:
        expected = expected_matmul(example.n)
        for r, tensor in enumerate(got):
            assert torch.equal(tensor, expected), f"{where}: rank {r} expected\n{expected}\ngot\n{tensor}"


def check_fault(pools, step, kind, world_size, example):
    pool = pools.get(world_size)
    expected = EXPECTED_ERROR[kind]
    where = f"step {step}: fault {example} on {world_size} ranks"
    deadline_s = HANG_DEADLINE_S if kind.startswith("hang") else OK_DEADLINE_S
    try:
        got = pool.run(probes.fault, example, deadline_s=deadline_s, agree=True)
    except RankFailure as error:
        assert type(error) is expected, f"{where}: expected {expected.__name__}, got {type(error).__name__}:\n{error}"
        assert example.rank in error.details, f"{where}: the report omits the faulty rank:\n{error}"
    else:
        pytest.fail(f"{where}: expected {expected.__name__}, got observations {got}")
    if pool_survives(kind, world_size):
        assert pools.get(world_size) is pool, f"{where}: the pool was replaced, but every rank had answered"
    else:
        assert pool.broken, f"{where}: the pool is still marked live"
        assert_reaped(pool.pids, f"{where}: ranks of the killed pool")


def descendants():
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_random_faults_mixed_with_ordinary_examples(capsys):
    steps = schedule(random.Random(SEED), FAULTS)
    # The session's own pools (the `pools` fixture) may be alive: only what
    # this test starts must be gone at the end.
    before = descendants()
    pools = PoolManager()
    ran = Counter()
    try:
        for step, (kind, world_size, example) in enumerate(steps):
            check = check_fault if kind in EXPECTED_ERROR else check_ordinary
            check(pools, step, kind, world_size, example)
            ran[kind] += 1
        zygote = [pools.zygote.proc.pid] if pools.zygote else []
    finally:
        pools.close_all()
    left = descendants() - before
    assert not left, f"after close_all: process(es) left behind: {describe(sorted(left))}"
    assert_reaped(zygote, "the stress test's zygote")
    with capsys.disabled():
        faults = {k: ran[k] for k in EXPECTED_ERROR}
        print(f"\nstress (seed {SEED}): {sum(faults.values())} faults {faults}; "
              f"{sum(ran[k] for k in ORDINARY)} ordinary examples; {len(pools.respawns)} pool respawns")
    if FAULTS >= len(EXPECTED_ERROR):
        missing = [k for k in EXPECTED_ERROR if not ran[k]]
        assert not missing, f"fault kind(s) {missing} never ran in {FAULTS} faults"
