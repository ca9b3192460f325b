"""Our Hypothesis profiles, and that ours wins over Hypothesis' built-in `ci`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
from hypothesis import settings
def test_profile():
    s = settings.default
    print(f"PROFILE max_examples={s.max_examples} derandomize={s.derandomize} deadline={s.deadline}")
"""


@pytest.mark.parametrize("env, expected", [
    ({"CI": "true"}, "max_examples=60 derandomize=True deadline=None"),
    ({}, "max_examples=25 derandomize=False deadline=None"),
    ({"KDIST_PROFILE": "nightly"}, "max_examples=1000 derandomize=False deadline=None"),
], ids=["CI-set-loads-ours", "dev-by-default", "nightly"])
def test_profile_in_effect(tmp_path, env, expected):
    (tmp_path / "test_probe.py").write_text(PROBE)
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "KDIST_PROFILE")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_probe.py"), "-s", "-q",
                             "-p", "no:cacheprovider", "--kdist-target=reference"],
                            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert f"PROFILE {expected}" in result.stdout, f"expected {expected!r} with {env}, got:\n{result.stdout[-2000:]}"
