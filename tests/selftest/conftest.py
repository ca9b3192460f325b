"""Shared fixtures and process helpers for the suite's own tests of its rank pools."""

import time

import psutil
import pytest

from kdist_props.cluster import PoolManager

# interrupt_child/ holds a test that hangs on purpose. test_interrupt.py runs it
# in a subprocess and interrupts it; an ordinary run must never collect it.
collect_ignore = ["interrupt_child"]

# Generous deadline for examples that are supposed to succeed: a loaded CI
# machine must not turn them into hangs.
OK_DEADLINE_S = 30.0


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stress: long randomized fault injection (size with KDIST_STRESS_FAULTS)"
    )


@pytest.fixture(scope="session")
def pools():
    """One PoolManager for the selftests, so pools are started once and reused."""
    manager = PoolManager()
    yield manager
    manager.close_all()


def existing(pids):
    """The pids among `pids` that still have a process-table entry (zombies included)."""
    return [pid for pid in pids if psutil.pid_exists(pid)]


def running(pids):
    """The pids among `pids` whose process is still alive.

    A zombie counts as dead: it holds no memory, sockets or GPU, only a
    process-table slot until whoever inherited it reaps it.
    """
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_until_dead(pids, timeout_s):
    """Poll until none of `pids` is running; return those still running at the timeout."""
    deadline = time.monotonic() + timeout_s
    while running(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running(pids)


def assert_reaped(pids, what):
    """Every pid is gone from the process table: killed and waited for, not a zombie."""
    left = existing(pids)
    assert not left, f"{what}: pid(s) {left} of {sorted(pids)} still exist ({describe(left)})"


def describe(pids):
    """`pid: status cmdline` for each pid, for assertion messages."""
    lines = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            lines.append(f"{pid}: {proc.status()} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            lines.append(f"{pid}: gone")
    return "; ".join(lines)
