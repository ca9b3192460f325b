"""The GitHub Actions workflows: actionlint finds nothing, and every test step
is a tox command that a user can run locally unchanged."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.selftest

WORKFLOWS = sorted((Path(__file__).parents[2] / ".github" / "workflows").glob("*.yml"))
# A step that runs the suite: `python -m tox -e <env> [-- <pytest args>]`.
TOX_STEP = re.compile(r"^\s*run: python -m tox (-e|exec -e) [\w,-]+( -- .*)?$", re.MULTILINE)


def test_there_are_pr_and_nightly_workflows():
    assert {w.name for w in WORKFLOWS} >= {"pr.yml", "nightly.yml"}, f"workflows found: {[w.name for w in WORKFLOWS]}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_actionlint_finds_nothing(workflow):
    # Installed beside this interpreter by tox -e selftest (its bin may not be on PATH).
    actionlint = shutil.which("actionlint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                  os.environ.get("PATH", "")]))
    assert actionlint, "actionlint is not installed (tox -e selftest installs it)"
    result = subprocess.run([actionlint, "-no-color", str(workflow)], capture_output=True, text=True)
    assert result.returncode == 0, f"actionlint on {workflow.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_test_steps_are_tox_commands(workflow):
    text = workflow.read_text()
    runs_suite = [line for line in text.splitlines() if re.search(r"\b(pytest|kdist-props mutants)\b", line)
                  and line.strip().startswith("run:")]
    assert not runs_suite, f"{workflow.name}: steps that bypass tox: {runs_suite}"
    assert TOX_STEP.search(text), f"{workflow.name}: no `python -m tox -e <env>` step"
