"""Verdicts are types: a target that raises Unsupported or Incompatible from
every hook, Tier A and Tier B, at worlds 1 and 2, gets only `unsupported` or
`incompatible` cells, never `fail`; one that raises an ordinary exception
gets only `fail` cells whose reason starts with that exception's type."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdist_props import contract
from kdist_props.reporting.report import load

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZES = (1, 2)


def report_of(stub, tmp_path):
    """The report cells of the whole property suite run against stub target `stub`."""
    target = f"py:tests.selftest.stub_targets:{stub}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDIST_", "CI"))}
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/properties", "-q", "-p", "no:cacheprovider", f"--kdist-target={target}",
         "--kdist-world-sizes=" + ",".join(map(str, WORLD_SIZES)), f"--kdist-report={report}",
         "--kdist-deadline=30", "-p", "tests.selftest.verdict_profile", "--hypothesis-profile=kdist-verdicts"],
        cwd=ROOT, env={**env, "KERAS_BACKEND": "torch"}, capture_output=True, text=True, timeout=900)
    assert report.exists(), f"no report; pytest exit {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    cells = [c for c in load(report)["results"] if c["target"] == target]
    expected = {(c.id, ws) for c in contract.CLAUSES for ws in WORLD_SIZES}
    assert {(c["clause"], c["world_size"]) for c in cells} == expected, "every clause at every world size has a cell"
    return result, cells


@pytest.mark.parametrize("stub, status", [("RaisesUnsupported", "unsupported"),
                                          ("RaisesIncompatible", "incompatible")])
def test_a_target_verdict_is_never_a_failure(stub, status, tmp_path):
    result, cells = report_of(stub, tmp_path)
    wrong = [(c["clause"], c["world_size"], c["status"], c["reason"]) for c in cells if c["status"] != status]
    assert not wrong, f"expected every cell {status}, got: {wrong}"
    assert result.returncode == 0, f"expected a green run, got exit {result.returncode}:\n{result.stdout[-3000:]}"
    assert all(c["reason"].startswith("stub target:") for c in cells if c["status"] == "unsupported"), \
        [c["reason"] for c in cells]


def test_an_ordinary_exception_fails_every_cell_with_its_type(tmp_path):
    result, cells = report_of("RaisesStubError", tmp_path)
    wrong = [(c["clause"], c["world_size"], c["status"]) for c in cells if c["status"] != "fail"]
    assert not wrong, f"expected every cell fail, got: {wrong}"
    reasons = [f["reason"] for c in cells for f in c["failures"]]
    assert reasons and all(r.startswith("StubError: stub target:") for r in reasons), \
        f"expected every reason to start with 'StubError: stub target:', got {sorted(set(reasons))}"
    assert result.returncode == 1, f"expected failures (exit 1), got {result.returncode}"
