"""Standalone repros (kdist_props/reporting/repro.py): a failing cell writes a script that
fails under torchrun on the target that failed, and holds on the reference.

Each test runs property tests in a pytest subprocess (ci profile, 2 ranks,
report under tmp_path), then the repro scripts they wrote under
`torchrun --standalone` (it picks the rendezvous port).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdist_props.reporting import repro

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN_TIMEOUT_S = 240
PYTEST_TIMEOUT_S = 480

# (mutant, clause it breaks, the test that catches it)
MUTANT_CASES = [
    ("read-local-shard", "variable.read", "test_a_standalone_variable_reads_in_full"),
    ("placements-axis-order", "layout.placements", "test_placements_shard_where_the_layout_names_an_axis"),
    ("parameter-wraps-int", "variable.wrapping", "test_any_variable_keeps_its_value_and_only_floats_get_gradients"),
]
MUTANT_TEST_FILES = ["tests/properties/test_model_variables.py", "tests/properties/test_layout.py",
                     "tests/properties/test_variables.py"]


def run_suite(tmp_path, files, tests, targets, env=None):
    """Run `tests` of `files` on `targets` at world size 2; the pytest output (it writes the repros)."""
    env = {**os.environ, "KERAS_BACKEND": "torch", **(env or {})}
    command = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider",
               "-k", " or ".join(tests), f"--kdist-target={','.join(targets)}", "--kdist-world-sizes=2",
               "--kdist-profile=ci", "--kdist-mutant-scope=all", f"--kdist-report={tmp_path / 'report.json'}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S)
    return result.stdout + result.stderr


def torchrun(script, *args, python=sys.executable, env=None):
    """(exit code, output) of the script under torchrun on 2 ranks, run from the script's folder."""
    command = [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), *args]
    result = subprocess.run(command, cwd=script.parent, env={**os.environ, "KERAS_BACKEND": "torch", **(env or {})},
                            capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)
    return result.returncode, result.stdout + result.stderr


def test_a_mutants_repro_fails_on_the_mutant_and_holds_on_the_reference(tmp_path):
    targets = [f"mutant:{name}" for name, _, _ in MUTANT_CASES]
    output = run_suite(tmp_path, MUTANT_TEST_FILES, [test for _, _, test in MUTANT_CASES], targets)
    for name, clause, test in MUTANT_CASES:
        target = f"mutant:{name}"
        script = repro.repro_path(tmp_path / "report.json", clause, f"{target}-w2")
        assert script.exists(), f"{target} {test}: no repro at {script}; pytest said:\n{output[-4000:]}"
        assert repro.command_line(script, 2) in output, f"the failure output does not name {script}"

        code, ran = torchrun(script)
        assert code != 0, f"repro of {target} exited 0 on the mutant:\n{ran[-3000:]}"
        # What came: an assertion's expected/got, or the rank's own exception.
        assert f"FAILS on target {target}" in ran and ("expected" in ran or "a rank failed" in ran), ran[-3000:]

        code, ran = torchrun(script, "--target", "reference")
        assert code == 0, f"repro of {target} fails on the reference:\n{ran[-3000:]}"
        assert "holds: the property holds for this example on target reference" in ran, ran[-3000:]


def keras_without_the_suite(tmp_path):
    """A Python whose sys.path has this Python's torch, numpy and Keras but no kdist_props:
    a venv whose .pth names our site-packages (the .pth files in a folder a .pth adds are
    not processed, so the editable install of kdist_props is not on the path)."""
    import keras

    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    keras_site = str(Path(keras.__file__).resolve().parents[1])
    Path(venv_site, "suite_deps.pth").write_text(keras_site + "\n")
    return python


@pytest.mark.skipif("KDIST_KERAS" in os.environ, reason="checks the installed Keras' baseline failure")
def test_a_keras_repro_runs_without_kdist_props_installed(tmp_path):
    """Keras 3.15.1: DataParallel on a two-axis mesh raises a TypeError (baselines/keras-3.15.1.toml)."""
    import keras

    if keras.__version__ != "3.15.1":
        pytest.skip(f"the known failure is Keras 3.15.1's; installed: {keras.__version__}")
    output = run_suite(tmp_path, ["tests/properties/test_layout.py"],
                       ["test_data_parallel_on_a_multi_axis_mesh_replicates"], ["keras"])
    script = repro.repro_path(tmp_path / "report.json", "layout.variable", "w2")
    assert script.exists(), f"no repro at {script}; pytest said:\n{output[-4000:]}"
    text = script.read_text()
    imported = {line.split()[1].split(".")[0] for line in text.splitlines()
                if line.startswith(("import ", "from "))}
    assert imported <= {"argparse", "base64", "importlib", "linecache", "os", "pickle", "sys", "traceback",
                        "numpy", "torch", "kdist_props"}, imported  # kdist_props: served from the bundle
    assert "'kdist_props.targets.mutants': " not in text  # the in-house targets stay out of a Keras repro's bundle
    assert "WARNING: needs a package" not in text  # repro.foreign_imports found nothing in the bundle

    python = keras_without_the_suite(tmp_path)
    isolated = tmp_path / "isolated"
    isolated.mkdir()
    copy = isolated / script.name
    copy.write_text(text)
    env = {"PYTHONPATH": ""}
    probe = subprocess.run([python, "-c", "import importlib.util as u, keras, torch, numpy; "
                            "print(u.find_spec('kdist_props'))"], cwd=isolated, capture_output=True, text=True,
                           env={**os.environ, "KERAS_BACKEND": "torch", **env})
    assert probe.stdout.strip() == "None", f"kdist_props is importable there: {probe.stdout}{probe.stderr}"

    code, ran = torchrun(copy, python=python, env=env)
    assert code != 0, ran[-3000:]
    assert "FAILS on target keras" in ran and "category must be a Warning subclass" in ran, ran[-3000:]
    assert "bundle:kdist_props.targets.keras" in ran  # the adapter came from the script, not an install
