"""Every benchmark of `tox -e bench` still runs: each once with tiny counts.
A smoke run, no timing asserted (timings are the benchmarks' own business,
printed by `tox -e bench`, never checked by a test)."""

import glob
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.selftest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
SMOKE_TIMEOUT_S = 600

# Tiny counts for each script in benchmarks/, and the line its output must end with.
SMOKE_RUNS = {
    "pool_vs_spawn.py": (["--examples", "2", "--spawn-examples", "1", "--world-sizes", "2"], "pool-vs-spawn: ratio="),
}


def run(command, tmp_path):
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S,
                          env={**os.environ, "KERAS_BACKEND": "torch", "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, f"{command} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_benchmark_has_a_smoke_run():
    scripts = {os.path.basename(path) for path in glob.glob(os.path.join(BENCHMARKS, "*.py"))}
    assert scripts == set(SMOKE_RUNS), f"benchmarks/ holds {sorted(scripts)}; smoke runs know {sorted(SMOKE_RUNS)}"


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs(script, tmp_path):
    args, last_line = SMOKE_RUNS[script]
    out = run([sys.executable, os.path.join(BENCHMARKS, script), *args], tmp_path)
    assert last_line in out.strip().splitlines()[-1], out[-2000:]


def test_leak_sweep_runs(tmp_path):
    """`kdist-props leaks` (the ceiling sweep of `tox -e bench`) on one small test, one world size."""
    out = run([sys.executable, "-m", "kdist_props.cli", "leaks", "--tests",
               "tests/properties/test_tensors.py::test_each_rank_holds_its_chunk_and_the_whole_is_exact",
               "--world-sizes", "2", "--profile", "dev", "--ceilings", "64,none",
               "--targets", "mutant:leaky-process-groups", "--reports", str(tmp_path / "leaks")], tmp_path)
    assert "leaky-target: best ceiling=" in out, out[-2000:]
    assert out.count("mutant:leaky-process-groups") >= 2, out[-2000:]  # a row per ceiling
