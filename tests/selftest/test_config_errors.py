"""Bad settings give one clear line, exit status 4 (usage error), and start no rank."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]
PROPERTY = "tests/properties/test_layout.py"


def run_pytest(*args, env=None, python_prefix=()):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("KDIST_", "KERAS_BACKEND"))}
    environment.update(env or {})
    command = [sys.executable, *python_prefix, "-m", "pytest", PROPERTY, "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def assert_usage_error(result, fragment):
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert result.returncode == 4, f"expected exit 4 (usage error), got {result.returncode}: {result.stderr[-2000:]}"
    assert len(errors) == 1 and fragment in errors[0], f"expected one ERROR line naming {fragment!r}, got {errors}"
    assert "kdist-props: target=" not in result.stdout, "the session started (its header was printed)"


@pytest.mark.parametrize("args, env, fragment", [
    (["--kdist-target=bogus"], {}, "unknown target 'bogus'"),
    ([], {"KDIST_TARGET": "mutant:nonesuch"}, "unknown target 'mutant:nonesuch'"),
    ([], {"KERAS_BACKEND": "jax"}, "KERAS_BACKEND='jax'"),
    ([], {"KDIST_KERAS": "/"}, "is not a Keras source tree"),
    (["--kdist-world-sizes=1000"], {}, "world size 1000"),
    (["--kdist-world-sizes=0,2"], {}, "--kdist-world-sizes"),
    (["--kdist-profile=fastest"], {}, "--kdist-profile='fastest'"),
], ids=["target", "mutant", "backend", "checkout", "too-many-ranks", "bad-world-size", "profile"])
def test_bad_setting_is_one_line(args, env, fragment):
    assert_usage_error(run_pytest(*args, env=env), fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_nccl_without_gpus_is_one_line():
    assert_usage_error(run_pytest("--kdist-device=cuda"), "sees no CUDA GPU")


def test_missing_keras_is_one_line():
    # A None entry in sys.modules makes `import keras` fail as if it were not installed.
    hide_keras = ("-c", "import sys; sys.modules['keras'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))")
    result = subprocess.run(
        [sys.executable, *hide_keras, PROPERTY, "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("KDIST_")},
        capture_output=True, text=True, timeout=120)
    assert_usage_error(result, "Keras cannot be imported")
