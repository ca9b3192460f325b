"""Shared fixtures and process helpers for the suite's own tests of its rank pools."""

import os
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
    config.addinivalue_line("markers", "torchrun: starts torchrun agents on this host (tests/selftest/test_torchrun.py)")


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

    A zombie counts as dead (it holds only a process-table slot until whoever
    inherited it reaps it), unless other threads of it are still exiting: a
    killed process' main thread turns zombie first, and its memory and
    descriptors go with its last thread.
    """
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE or len(os.listdir(f"/proc/{pid}/task")) > 1:
                alive.append(pid)
        except (psutil.NoSuchProcess, FileNotFoundError):
            pass
    return alive


def wait_for(condition, timeout_s):
    """Poll `condition()` until it is true or `timeout_s` has passed; return its last value."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def wait_until_dead(pids, timeout_s):
    """Poll until none of `pids` is running; return those still running at the timeout."""
    wait_for(lambda: not running(pids), timeout_s)
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
