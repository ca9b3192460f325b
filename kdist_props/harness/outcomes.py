"""Where a test's outcome is decided: the one place that turns what a test
raised (typed, never its traceback text) into the report's outcome and into
the reason lines the report and baselines read.

- A target's verdict (targets.base.Unsupported / Incompatible, raised on a
  rank or in the driver) ends the test as a VerdictSkip: a pytest skip that
  carries its status, so the report reads `unsupported` / `incompatible`
  from the exception's type, not from its text.
- Anything else a test raised is a failure. Its reason line is built from
  the exception object: for a rank error, the rank's own exception type and
  message (RaisedOutcome.headline); for an assertion, its message. Each
  member of Hypothesis' ExceptionGroup (one per distinct bug) is a failure of
  its own, with the shrunk example Hypothesis attached to it as notes.
"""

import pytest

from kdist_props.cluster.errors import RankError, RankFailure
from kdist_props.cluster.outcome import SuiteVerdict

# pytest's skip exception (not public under that name).
Skipped = pytest.skip.Exception


class VerdictSkip(Skipped):
    """The test ends as the suite's verdict `status` ("unsupported" or
    "incompatible"): what the target lacks, or what the suite could not read."""

    def __init__(self, status, reason):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def verdict_of(error):
    """The VerdictSkip a rank error stands for, when every rank that raised
    raised the same kind of suite verdict; else None (the error is a failure)."""
    if not isinstance(error, RankError):
        return None
    outcomes = [error.outcomes[r] for r in sorted(error.outcomes)]
    statuses = {outcome.verdict for outcome in outcomes}
    if len(statuses) != 1 or None in statuses:
        return None
    return VerdictSkip(statuses.pop(), outcomes[0].message)


def skip_for(verdict):
    """The VerdictSkip of a SuiteVerdict raised in the driver."""
    return VerdictSkip(verdict.status, str(verdict))


def outcome(report, excinfo, *, expected_to_fail):
    """The report outcome of one pytest phase: passed, failed, skipped,
    unsupported, incompatible, xfailed or xpassed; None for a phase that says
    nothing (a passing setup or teardown). `expected_to_fail`: the test
    carries an xfail mark (a baseline entry)."""
    if report.when == "setup" and report.passed or report.when == "teardown":
        return None
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when == "call" and report.failed and excinfo is None and expected_to_fail:
        return "xpassed"  # a strict expected failure that passed: pytest fails it with nothing raised
    if report.skipped and excinfo is not None and isinstance(excinfo.value, VerdictSkip):
        return excinfo.value.status
    return report.outcome


def skip_reason(report, excinfo):
    """The reason of a skip, an expected failure, or a verdict."""
    if hasattr(report, "wasxfail"):
        return report.wasxfail
    if excinfo is not None and isinstance(excinfo.value, VerdictSkip):
        return excinfo.value.reason
    if excinfo is not None and isinstance(excinfo.value, Skipped):
        return excinfo.value.msg
    return None


def failures(error):
    """(reason line, shrunk example) of every distinct failure in what a test raised."""
    if isinstance(error, BaseExceptionGroup):
        return [failure for member in error.exceptions for failure in failures(member)]
    return [(reason(error), shrunk_example(error))]


def reason(error):
    """One line: the exception's type and message, or the assertion. For a
    rank failure, what the rank raised (or how it ended), then which ranks."""
    if isinstance(error, RankFailure):
        return error.reason()
    name = "AssertionError" if isinstance(error, AssertionError) else type(error).__name__
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{name}: {first}" if first else name


def shrunk_example(error):
    """Hypothesis' shrunk example as it attached it to the exception: the
    failing call and its labelled draws."""
    kept = []
    for note in getattr(error, "__notes__", ()):
        if note.lstrip().startswith(("You can reproduce", "@reproduce_failure")):
            continue
        if note.startswith("Explanation:"):
            break  # the explain phase's notes (lines only failing examples ran) follow
        kept.append(note.rstrip())
    return "\n".join(kept) or None


__all__ = ["SuiteVerdict", "VerdictSkip", "failures", "outcome", "reason", "skip_for", "skip_reason",
           "verdict_of"]
