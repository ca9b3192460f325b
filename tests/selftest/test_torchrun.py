"""torchrun mode: ranks launched by two `torchrun` "nodes" on this host dial
into the driver over TCP and serve examples as a local pool does.

Both tests start real torchrun agents (c10d rendezvous, two invocations, as on
two hosts) and leave nothing behind: every process whose command line names
this test's driver address is gone at the end, agents and workers alike.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from kdist_props.cluster.errors import RankCrash, RankHang
from kdist_props.cluster.remote import TorchrunPools
from kdist_props.cluster.remote_rank import REPLACED
from kdist_props.properties import probes
from kdist_props.contract.specs import FaultExample

from tests.selftest.conftest import OK_DEADLINE_S, describe, wait_for

pytestmark = [pytest.mark.selftest, pytest.mark.torchrun]

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# Four workers importing torch and Keras on a small shared machine.
STARTUP_TIMEOUT_S = 300
AGENTS_FINISH_S = 120

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def torchrun_nodes(tmp_path, driver, nproc_per_node, env, max_restarts):
    """Two torchrun agents ("nodes") on one c10d rendezvous, each in its own
    session; on the way out every process naming `driver` is killed."""
    rendezvous = f"127.0.0.1:{free_port()}"
    command = [str(TORCHRUN), "--nnodes=2", f"--nproc-per-node={nproc_per_node}", f"--max-restarts={max_restarts}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={rendezvous}", f"--rdzv-id=kdist-{secrets.token_hex(4)}",
               "-m", "kdist_props.cluster.remote_rank", f"--driver={driver}"]
    nodes = []
    try:
        for node in range(2):
            log = open(tmp_path / f"node{node}.log", "w")
            nodes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        yield nodes
    finally:
        for proc in nodes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the agent and anything in its session
            except ProcessLookupError:
                pass
            proc.wait()
        for proc in naming(driver):  # workers are reaped by their agent's death (PDEATHSIG)
            proc.kill()
        wait_for(lambda: not naming(driver), 30)
        left = naming(driver)
        assert not left, f"processes of the torchrun job still run: {describe([p.pid for p in left])}"


def naming(driver):
    """Live processes whose command line names this driver address (agents and workers)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and f"--driver={driver}" in (proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def job_environment():
    return {**os.environ, "KERAS_BACKEND": "torch", "KDIST_AUTHKEY": secrets.token_hex(16),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def logs(tmp_path):
    return "\n".join(f"--- {path.name} ---\n{path.read_text()[-3000:]}" for path in sorted(tmp_path.glob("node*.log")))


def test_two_nodes_catch_dp_no_grad_sync_at_world_size_4(tmp_path):
    """The training property, run by pytest against four torchrun workers on
    two agents, fails on the mutant that skips the gradient all-reduce; at the
    end of the session the workers exit 0 and both agents finish by themselves."""
    driver = f"127.0.0.1:{free_port()}"
    env = job_environment()
    # One train.equivalence test: world size 4 on a small machine is slow.
    command = [sys.executable, "-m", "pytest", "tests/properties/test_training.py", "-k", "final_weights and fit", "-q",
               "-p", "no:cacheprovider", f"--kdist-torchrun={driver}", "--kdist-target=mutant:dp-no-grad-sync",
               "--kdist-world-sizes=4", "--kdist-profile=ci",
               f"--kdist-startup-timeout={STARTUP_TIMEOUT_S}", f"--kdist-report={tmp_path / 'report.json'}"]
    # Restarts: a hang (or a shrink attempt past the short deadline) replaces the pool.
    with torchrun_nodes(tmp_path, driver, 2, env, max_restarts=20) as nodes:
        with open(tmp_path / "driver.log", "w") as log:
            result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=STARTUP_TIMEOUT_S + 600)
        output = (tmp_path / "driver.log").read_text()
        print(" ".join(command), "\n", output[-6000:])
        finished = wait_for(lambda: all(node.poll() is not None for node in nodes), AGENTS_FINISH_S)
        codes = [node.poll() for node in nodes]
    assert result.returncode == 1, f"expected the property to fail (exit 1), got {result.returncode}:\n" \
                                   f"{output[-4000:]}\n{logs(tmp_path)}"
    cells = {(c["clause"], c["world_size"]): c for c in json.loads((tmp_path / "report.json").read_text())["results"]}
    cell = cells[("train.equivalence", 4)]
    assert cell["status"] == "fail", f"expected train.equivalence w4 to fail on dp-no-grad-sync, got {cell}"
    assert finished and codes == [0, 0], f"expected both torchrun agents to finish with 0 after the session, " \
                                         f"got {codes}:\n{logs(tmp_path)}"


def test_hang_dumps_stacks_and_a_restart_of_the_job_is_the_next_pool(tmp_path):
    """A hung rank's stack comes back over the control connection; after the
    hang and after a crash, the agents restart the workers (exit REPLACED) and
    the restarted workers are the next pool."""
    driver_port = free_port()
    driver = f"127.0.0.1:{driver_port}"
    env = job_environment()
    pools = TorchrunPools(("127.0.0.1", driver_port), 2, env["KDIST_AUTHKEY"].encode(),
                          startup_timeout_s=STARTUP_TIMEOUT_S)
    try:
        with torchrun_nodes(tmp_path, driver, 1, env, max_restarts=2) as nodes:
            first = pools.get(2)
            assert first.restart_counts == (0, 0)
            with pytest.raises(RankHang) as hang:
                first.run(probes.fault, FaultExample("hang-in-collective", 1), target="reference", deadline_s=5)
            stacks = str(hang.value)
            assert "in barrier" in stacks and "in fault" in stacks, \
                f"expected rank 0's stack in barrier and rank 1's in fault, got:\n{stacks}"

            second = pools.get(2)
            assert second.restart_counts == (1, 1) and not set(second.pids) & set(first.pids)
            with pytest.raises(RankCrash) as crash:
                second.run(probes.fault, FaultExample("exit", 0), target="reference", deadline_s=OK_DEADLINE_S)
            assert "rank 0" in str(crash.value) and "connection lost" in str(crash.value)

            third = pools.get(2)
            identities = third.run(probes.rank_identity, None, target="reference", deadline_s=OK_DEADLINE_S)
            assert [(i.rank, i.world_size, i.pid) for i in identities] == [(0, 2, third.pids[0]), (1, 2, third.pids[1])]
            pools.close_all()
            finished = wait_for(lambda: all(node.poll() is not None for node in nodes), AGENTS_FINISH_S)
            codes = [node.poll() for node in nodes]
    finally:
        pools.close_all()
    assert finished and codes == [0, 0], f"expected both agents to finish with 0 after close_all, got {codes}:\n" \
                                         f"{logs(tmp_path)}"
    assert f"exitcode: {REPLACED}" in logs(tmp_path), "expected the agents to log workers ended with REPLACED"
