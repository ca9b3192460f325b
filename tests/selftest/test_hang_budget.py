"""A target that hangs for some inputs costs a bounded number of long
deadlines: after a test's first hang, its further examples (Hypothesis'
shrink attempts) run under a short deadline derived from the test's own
example times; only the first hang and the final replay of the failure wait
the long --kdist-deadline.

Runs ops.matmul against the `matmul-hangs` mutant (ranks but 0 wait in a
collective rank 0 skips, for wide enough operands) in a pytest subprocess and
checks the counts the session prints, not wall-clock times.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdist_props.harness.runner import LONG_WAITS_PER_TEST

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]
# Long enough that a working example never reaches it on a loaded machine,
# short enough that the two long waits stay cheap.
LONG_DEADLINE_S = 4
HANG_LINE = re.compile(r"^hang: (\S+): long-deadline waits=(\d+) short-deadline waits=(\d+)", re.M)


def test_hanging_target_waits_the_long_deadline_at_most_three_times(tmp_path):
    command = [sys.executable, "-m", "pytest", "tests/properties/test_ops.py", "-q", "-p", "no:cacheprovider",
               "--kdist-target=mutant:matmul-hangs", "--kdist-world-sizes=2", "--kdist-profile=ci",
               f"--kdist-deadline={LONG_DEADLINE_S}", f"--kdist-report={tmp_path / 'report.json'}"]
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "RankHang" in output, (
        f"expected the property to fail with RankHang, got exit {result.returncode}:\n{output[-4000:]}")
    hangs = HANG_LINE.findall(output)
    assert len(hangs) == 1, f"expected one 'hang:' line (one test hung), got {hangs}:\n{output[-3000:]}"
    long_waits, short_waits = int(hangs[0][1]), int(hangs[0][2])
    # The first hang, then at most the final replays of the failure.
    assert 1 <= long_waits <= LONG_WAITS_PER_TEST, f"expected 1..{LONG_WAITS_PER_TEST} long-deadline waits, " \
                                                   f"got {long_waits} (short: {short_waits})"
    # Hypothesis went on shrinking through hangs, each under the short deadline.
    assert short_waits >= 1, f"expected shrink attempts that hung under the short deadline, got {short_waits}"
