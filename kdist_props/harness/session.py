"""One pytest session of kdist-props: which cases each test runs, which test
is running, and what its outcome puts in the report. Settings are parsed once
(config.py), examples run through runner.py, the harness's events go to
stats.py, outcomes are decided in outcomes.py and the header is header.py's.
The plugin module only wires these into pytest hooks."""

import contextlib
import sys
import warnings
from dataclasses import dataclass, field

import pytest
from hypothesis import statistics

from kdist_props.reporting import baselines, repro
from kdist_props.harness import header, outcomes, torch_bugs
from kdist_props.harness.config import SessionConfig
from kdist_props.harness.costs import CostLedger
from kdist_props.harness.runner import Runner, TestRecord
from kdist_props.harness.stats import HarnessStats
from kdist_props.reporting.report import ENVIRONMENT_PARAM, ReportBuilder
from kdist_props.targets import registry


@dataclass(repr=False)
class Session:
    config: SessionConfig
    baseline: baselines.Baseline
    pools: object  # cluster.PoolManager, or TorchrunPools
    current: TestRecord = None
    stats: HarnessStats = field(default_factory=HarnessStats)
    costs: CostLedger = field(default_factory=CostLedger)  # where the session's time went
    builder: ReportBuilder = field(default_factory=ReportBuilder)
    caught: set = field(default_factory=set)  # mutants that failed a clause they break
    turns: dict = field(default_factory=dict)  # nodeid -> turns it got in a budget run
    summary: list = field(default_factory=list)
    database_entries_at_start: int = 0

    @classmethod
    def from_pytest(cls, pytest_config):
        config = SessionConfig.from_pytest(pytest_config)
        baseline = baselines.load_baseline(config.baselines, "keras", config.keras_version) \
            if "keras" in config.targets else baselines.Baseline()
        repro.clear_repros(config.report_path)  # a cell that passes now keeps no old repro
        return cls(config=config, baseline=baseline, pools=header.pool_manager(config),
                   database_entries_at_start=header.count_files(header.database_path()))

    # -- collection -------------------------------------------------------

    def cases_for(self, clause):
        """(target, world size) of every case a test of `clause` runs."""
        scope = self.config.mutant_scope
        return [(t, ws) for t in self.config.targets for ws in self.config.world_sizes
                if not t.startswith(registry.MUTANT_PREFIX) or scope == "all" or clause is None
                or mutant_breaks(t, clause)]

    def case_id(self, target, world_size):
        return f"w{world_size}" if len(self.config.targets) == 1 else f"{target}-w{world_size}"

    def runner(self, target, world_size):
        return Runner(self, target, world_size)

    def apply_baselines(self, items):
        for item in items:
            target, world_size, clause = item_case(item)
            entry = self.baseline.match(item.nodeid, clause, world_size) if target == "keras" else None
            if entry is not None:
                item.add_marker(pytest.mark.xfail(strict=entry.strict, reason=f"known failure ({self.baseline.path}): "
                                                                      f"{entry.reason}"))
        if any(item_case(item)[0] == "keras" for item in items):
            for entry in self.baseline.unmatched():
                warnings.warn(f"baseline {self.baseline.path}: entry matches no test: {entry}")

    # -- running ----------------------------------------------------------

    def begin_test(self, item, runner, clause):
        self.current = TestRecord(item.nodeid, runner.target, runner.world_size, clause)
        if self.config.device == "cuda" and not self.config.torchrun:  # torchrun ranks count their own GPUs
            import torch

            if torch.cuda.device_count() < runner.world_size:
                pytest.skip(f"world size {runner.world_size} needs {runner.world_size} GPUs for NCCL; "
                            f"{torch.cuda.device_count()} visible")
        if self.config.mutant_scope == "first-catch" and runner.target in self.caught:
            pytest.skip(f"{runner.target} is caught already (--kdist-mutant-scope=first-catch)")
        reason = registry.load_target(runner.target).unsupported(clause) if clause else None
        if reason:
            raise outcomes.VerdictSkip("unsupported", reason)
        if runner.world_size in self.pools.pools:
            # Every test starts from a clean target (its first run asks the ranks
            # for one) on ranks that hold no groups or threads left by earlier
            # tests: when the pool replaces itself during the test then depends
            # on this test alone, and so does the verdict its replay line reproduces.
            runner.replace_pool_if(lambda pool: pool.has_grown())

    def record(self, item, call, rep):
        """Note a test's outcome in the report: a cell of its (target, clause,
        world size), or for an environment probe (marked `environment`) the
        report's environment section, never a target's cell."""
        target, world_size, clause = item_case(item)
        probe = item.get_closest_marker("environment")
        outcome = outcomes.outcome(rep, call.excinfo, expected_to_fail=item.get_closest_marker("xfail") is not None)
        if clause is None and probe is None or outcome is None:
            return
        reason = outcomes.skip_reason(rep, call.excinfo)
        failed = outcome in ("failed", "xfailed") and call.excinfo is not None
        failures = outcomes.failures(call.excinfo.value) if failed else []
        if probe is not None:
            callspec = getattr(item, "callspec", None)
            self.builder.record_environment(
                probe=probe.args[0], world_size=callspec.params.get(ENVIRONMENT_PARAM) if callspec else None,
                test=item.nodeid, outcome=outcome, workaround=probe.kwargs.get("workaround"),
                reason=reason or (failures[0][0] if failures else None))
            return
        record = self.current if self.current and self.current.nodeid == item.nodeid else None
        bugs = torch_bugs.bugs_met(record.final_examples) if record else {}
        failures = [(torch_bugs.annotated(why, bugs), example) for why, example in failures]
        if outcome == "xfailed":
            outcome, reason = self.check_known_reason(item, rep, clause, world_size, failures, reason)
        if rep.when == "call" and outcome in ("failed", "xfailed"):  # known failures get repros too
            self.write_repro(item, rep, target, clause, world_size, failures)
        if outcome == "failed":
            rep.sections.append(("kdist replay", self.replay_hint(item, target, world_size, record)))
            if target.startswith(registry.MUTANT_PREFIX) and mutant_breaks(target, clause):
                self.caught.add(target)
        self.builder.record(target=target, clause=clause, world_size=world_size, nodeid=item.nodeid,
                            outcome=outcome, examples=record.examples if record else 0, reason=reason,
                            failures=failures, examples_to_failure=record.first_failure_at if record else None)

    def check_known_reason(self, item, rep, clause, world_size, failures, reason):
        """A known failure must fail for its known reason: a baseline entry with
        `match` does not cover a failure whose reason line it misses."""
        entry = self.baseline.match(item.nodeid, clause, world_size)
        unexplained = [why for why, _ in failures if entry is not None and not entry.explains(why)]
        if not unexplained:
            return "xfailed", reason
        rep.outcome = "failed"
        del rep.wasxfail
        rep.sections.append(("kdist baseline", f"{self.baseline.path} expects this test to fail with a "
                             f"reason matching {entry.match!r}; it failed with: {unexplained[0]}"))
        return "failed", None

    def write_repro(self, item, rep, target, clause, world_size, failures):
        shown = "\n".join(f"{why}\n{example or ''}" for why, example in failures)
        path = repro.write_repro(item, target=target, clause=clause, world_size=world_size,
                                 case_id=self.case_id(target, world_size), device=self.config.device,
                                 report_path=self.config.report_path, failure_text=shown)
        if path:
            rep.sections.append(("kdist repro", repro.command_line(path, world_size)))

    def replay_hint(self, item, target, world_size, record):
        after = f" (first failure after {record.first_failure_at} examples)" if record and record.first_failure_at else ""
        return (
            f"replay this test{after}:\n  KDIST_TARGET={target} {sys.executable} -m pytest '{item.nodeid}' "
            f"--kdist-world-sizes={world_size} --kdist-profile={self.config.profile}\n"
            "Hypothesis replays the shrunk example from its database (dev/nightly profiles); with the ci profile, "
            "paste the @reproduce_failure line printed above onto the test to pin it."
        )

    @contextlib.contextmanager
    def hypothesis_statistics(self):
        """While a test runs, learn from Hypothesis how many examples it ran
        before the first failing one (its statistics callback)."""
        previous = statistics.collector.value
        record = self.current

        def note(stats):
            if record is not None:
                record.first_failure_at = examples_to_first_failure(stats)
            if previous is not None:
                previous(stats)

        with statistics.collector.with_value(note):
            yield

    # -- reporting --------------------------------------------------------

    def finish(self):
        self.pools.close_all()
        self.summary = header.write_report(self)


def item_case(item):
    """(target, world size, clause) of a property test; Nones for anything else."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("kdist") if callspec is not None else None
    if not isinstance(case, tuple):  # not a property, or no case (a mutant that skips this clause)
        return None, None, None
    marker = item.get_closest_marker("clause")
    target, world_size = case
    return target, world_size, marker.args[0] if marker else None


def mutant_breaks(target, clause):
    """Whether `clause` is one that mutant `target` declares it breaks (targets/mutants.py)."""
    from kdist_props.targets.mutants import MUTANTS

    return clause in MUTANTS[target.removeprefix(registry.MUTANT_PREFIX)].breaks


def examples_to_first_failure(stats):
    """Test cases Hypothesis ran up to and including the first failing one."""
    count = 0
    for phase in ("explicit", "reuse", "generate"):
        for case in stats.get(f"{phase}-phase", {}).get("test-cases", []):
            count += 1
            if case.get("status") == "interesting":
                return count
    return None
