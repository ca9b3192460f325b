"""End to end: a pytest run interrupted mid-example leaves nothing behind.

Each test runs interrupt_child/test_child.py in a pytest subprocess. The child
starts a pool, reports its processes, and hangs in an example; the test then
signals the child and checks that the ranks, the zygote and the ranks' TCP
store are all gone: after Ctrl-C because the driver cleans up, after SIGTERM
and SIGKILL because PDEATHSIG takes the zygote with the driver and the ranks
with the zygote.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.selftest.conftest import assert_reaped, describe, existing, wait_for, wait_until_dead

pytestmark = pytest.mark.selftest

REPO = Path(__file__).resolve().parents[2]
CHILD = "tests/selftest/interrupt_child/test_child.py"
CHILD_START_TIMEOUT_S = 180  # pytest, torch and Keras imports plus the zygote, on a loaded machine
CHILD_EXIT_TIMEOUT_S = 60
CHILD_DEADLINE_S = 300  # the hanging example's dispatch deadline: far beyond the signal
ORPHANS_DIE_WITHIN_S = 10  # PDEATHSIG is immediate; this only absorbs scheduling delays
# The child writes the info file just before it dispatches the hanging example;
# this leaves it ample time to be waiting on the ranks when the signal lands.
SETTLE_S = 1.0

TCP_LISTEN = "0A"


def listening_sockets(port):
    """Inodes of the sockets in LISTEN state on local `port`, IPv4 and IPv6,
    from /proc/net/tcp{,6}."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(path):
            continue
        with open(path) as f:
            next(f)  # header
            for line in f:
                fields = line.split()
                local_address, state, inode = fields[1], fields[3], fields[9]
                if state == TCP_LISTEN and int(local_address.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


class Child:
    """The interrupted pytest run: its process, its output, and the pool it reported."""

    def __init__(self, tmp_path):
        self.info_path = tmp_path / "info.json"
        self.log_path = tmp_path / "child.log"
        env = {**os.environ, "KDIST_INTERRUPT_INFO": str(self.info_path)}
        # Every kdist option the child depends on is pinned: tox passes KDIST_* through,
        # and e.g. a short KDIST_DEADLINE would end the hang before the signal lands.
        command = [sys.executable, "-m", "pytest", CHILD, "-p", "no:cacheprovider", "-q",
                   "--kdist-target=reference", "--kdist-world-sizes=2", "--kdist-device=cpu",
                   f"--kdist-deadline={CHILD_DEADLINE_S}"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.info = None
        self.store_sockets = set()

    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait_for_hang(self):
        """Wait until the child has reported its pool and is stuck in the example."""
        deadline = time.monotonic() + CHILD_START_TIMEOUT_S
        while not self.info_path.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"the child exited with {self.proc.returncode} before reporting its pool:\n"
                            f"{self.output()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"the child reported no pool within {CHILD_START_TIMEOUT_S} s:\n{self.output()}")
            time.sleep(0.1)
        self.info = json.loads(self.info_path.read_text())
        time.sleep(SETTLE_S)
        assert self.proc.poll() is None, f"the child ended before it was signalled:\n{self.output()}"
        # Preconditions, so that "gone afterwards" cannot pass vacuously.
        assert len(self.info["ranks"]) == 2, f"expected 2 ranks, the child reported {self.info}"
        assert existing(self.pool_pids) == self.pool_pids, (
            f"before the signal, expected ranks and zygote alive, got {describe(self.pool_pids)}")
        # The store's own sockets, by inode: another process may legitimately
        # reuse the port once it is free; only these must be closed.
        self.store_sockets = listening_sockets(self.info["port"])
        assert self.store_sockets, (
            f"before the signal, the ranks' TCP store port {self.info['port']} is not listening")

    def signal_and_wait(self, signum):
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(CHILD_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the child was still running {CHILD_EXIT_TIMEOUT_S} s after "
                        f"{signal.Signals(signum).name}:\n{self.output()}")

    @property
    def pool_pids(self):
        return [*self.info["ranks"], self.info["zygote"]]

    def assert_store_closed(self, after, *, within_s=0.0):
        """None of the store's listening sockets is left, now or within `within_s`
        (the kernel may close them a moment after the rank is seen dead)."""
        port = self.info["port"]
        wait_for(lambda: not self.store_sockets & listening_sockets(port), within_s)
        still = self.store_sockets & listening_sockets(port)
        assert not still, (f"{within_s:g} s after {after}: the ranks' TCP store still listens on port {port} "
                           f"(socket inodes {still})")


@pytest.fixture
def child(tmp_path):
    child = Child(tmp_path)
    yield child
    if child.proc.poll() is None:  # a failed test must not leave the child hanging
        child.proc.kill()
        child.proc.wait()


def test_ctrl_c_mid_example_shuts_the_pool_down(child):
    child.wait_for_hang()
    code = child.signal_and_wait(signal.SIGINT)
    output = child.output()
    assert code == pytest.ExitCode.INTERRUPTED, (
        f"after SIGINT: expected pytest exit code {int(pytest.ExitCode.INTERRUPTED)}, got {code}:\n{output}")
    assert "KeyboardInterrupt" in output, f"after SIGINT: pytest reported no KeyboardInterrupt:\n{output}"
    # The driver killed the ranks and closed the zygote itself, and waited for them.
    assert_reaped(child.pool_pids, "after SIGINT (ranks, then zygote)")
    child.assert_store_closed("SIGINT")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_driver_takes_the_pool_with_it(child, signum):
    """The driver gets no chance to clean up; PDEATHSIG does it."""
    name = signal.Signals(signum).name
    child.wait_for_hang()
    code = child.signal_and_wait(signum)
    assert code == -signum, f"after {name}: expected the child to die of it (exit code {-signum}), got {code}"
    # Orphans are reparented to whoever reaps for this container: they may stay
    # zombies there, which `running` counts as dead.
    left = wait_until_dead(child.pool_pids, ORPHANS_DIE_WITHIN_S)
    assert not left, f"{ORPHANS_DIE_WITHIN_S} s after {name}: still running: {describe(left)}"
    child.assert_store_closed(name, within_s=ORPHANS_DIE_WITHIN_S)
