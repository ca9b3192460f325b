"""One pytest session of kdist-props: settings, pools, attribution of examples
to tests, baselines and the capability report. The plugin module only wires
these into pytest hooks."""

import contextlib
import os
import re
import sys
import warnings
from dataclasses import dataclass, field

import pytest
from hypothesis import reject, settings, statistics

from kdist_props import baselines, contract, profiles, report
from kdist_props.cluster import PoolManager
from kdist_props.cluster.errors import BackendLimitation, RankError
from kdist_props.environment import ConfigError, keras_checkout
from kdist_props.targets import registry

MAX_CPU_RANKS_PER_CORE = 4


def parse_world_sizes(text, device):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--kdist-world-sizes={text!r}: give positive integers separated by commas, e.g. 1,2,4")
    if device == "cpu":
        limit = MAX_CPU_RANKS_PER_CORE * (os.cpu_count() or 1)
        if max(sizes) > limit:
            raise ConfigError(
                f"world size {max(sizes)} needs {max(sizes)} rank processes, more than this machine's "
                f"{os.cpu_count()} cores can run ({limit} at most): lower --kdist-world-sizes"
            )
    return sorted(set(sizes))


def keras_facts():
    try:
        import keras
    except ImportError as error:
        raise ConfigError(f"Keras cannot be imported ({error}): pip install 'keras>=3.13' "
                          "or point KDIST_KERAS at a Keras checkout") from None

    origin = keras_checkout() or os.path.dirname(os.path.dirname(keras.__file__))
    return keras.__version__, ("checkout " if keras_checkout() else "installed ") + origin


@dataclass
class TestRecord:
    nodeid: str
    target: str
    world_size: int
    clause: str
    examples: int = 0
    first_failure_at: int = None


class Runner:
    """What a property test uses: run a body on every rank of its pool."""

    def __init__(self, session, target, world_size):
        self.session, self.target, self.world_size = session, target, world_size

    def __repr__(self):  # Hypothesis prints it in every failing example
        return f"kdist(target={self.target!r}, world_size={self.world_size})"

    def run(self, body, example, *, agree=False, stateful=False):
        """Observations by rank. A failure of the communication backend (not
        of the target) is noted in the report and the example is rejected."""
        record = self.session.current
        if record is not None:
            record.examples += 1
        pool = self.session.pools.get(self.world_size)
        try:
            return pool.run(body, example, target=self.target, deadline_s=self.session.deadline,
                            stateful=stateful, agree=agree)
        except BackendLimitation as limitation:
            self.session.backend_limitations.add(f"{limitation.summary}: {limitation.cause()}")
            reject()
        except RankError as error:
            # A target that says, on a rank, that the suite cannot drive it (or
            # that it lacks a piece) ends the test as such, never as a failure.
            verdict = target_verdict(error.cause())
            if verdict:
                pytest.skip(verdict)
            raise


@dataclass(repr=False)
class Session:
    targets: list
    world_sizes: list
    device: str
    deadline: float
    profile: str
    report_path: str
    mutant_scope: str
    target_source: str
    keras_version: str
    keras_origin: str
    baseline: object
    pools: PoolManager
    current: TestRecord = None
    backend_limitations: set = field(default_factory=set)
    builder: report.ReportBuilder = field(default_factory=report.ReportBuilder)
    summary: list = field(default_factory=list)
    recorded: bool = False

    @classmethod
    def from_config(cls, config):
        import kdist_props

        if kdist_props.ENVIRONMENT_ERROR is not None:
            raise kdist_props.ENVIRONMENT_ERROR
        option = config.getoption
        keras_version, keras_origin = keras_facts()
        targets = [t.strip() for t in option("--kdist-target").split(",") if t.strip()]
        for target in targets:
            registry.validate(target)
        device = option("--kdist-device")
        world_sizes = parse_world_sizes(option("--kdist-world-sizes"), device)
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--kdist-device=cuda, but torch {torch.__version__} sees no CUDA GPU: "
                                  "use --kdist-device=cpu (gloo) or run on a machine with GPUs")
        profile = config.getoption("--hypothesis-profile", None) or option("--kdist-profile") or profiles.default_profile()
        if profile not in profiles.PROFILES and not config.getoption("--hypothesis-profile", None):
            raise ConfigError(f"--kdist-profile={profile!r}: choose one of {', '.join(profiles.PROFILES)}")
        settings.load_profile(profile)
        baseline = baselines.load_baseline(option("--kdist-baselines"), "keras", keras_version) \
            if "keras" in targets else baselines.Baseline()
        return cls(
            targets=targets, world_sizes=world_sizes, device=device, deadline=option("--kdist-deadline"),
            profile=profile, report_path=option("--kdist-report"), mutant_scope=option("--kdist-mutant-scope"),
            target_source=target_source(config),
            keras_version=keras_version, keras_origin=keras_origin, baseline=baseline,
            pools=PoolManager(device=device, startup_timeout_s=option("--kdist-startup-timeout")),
        )

    # -- collection -------------------------------------------------------

    def runs_clause(self, target, clause):
        if not target.startswith(registry.MUTANT_PREFIX) or self.mutant_scope == "all" or clause is None:
            return True
        from kdist_props.targets.mutants import MUTANTS

        return clause in MUTANTS[target.removeprefix(registry.MUTANT_PREFIX)].breaks

    def cases_for(self, clause):
        return [(t, ws) for t in self.targets for ws in self.world_sizes if self.runs_clause(t, clause)]

    def case_id(self, target, world_size):
        return f"w{world_size}" if len(self.targets) == 1 else f"{target}-w{world_size}"

    def runner(self, target, world_size):
        return Runner(self, target, world_size)

    def apply_baselines(self, items):
        keras_items = 0
        for item in items:
            target, world_size, clause = self.item_case(item)
            if target != "keras":
                continue
            keras_items += 1
            entry = self.baseline.match(item.nodeid, clause, world_size)
            if entry is not None:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"known failure ({self.baseline.path}): "
                                                                      f"{entry.reason}"))
        for entry in self.baseline.unmatched() if keras_items else ():
            warnings.warn(f"baseline {self.baseline.path}: entry matches no test: {entry}")

    @staticmethod
    def item_case(item):
        callspec = getattr(item, "callspec", None)
        if callspec is None or "kdist" not in callspec.params:
            return None, None, None
        marker = item.get_closest_marker("clause")
        target, world_size = callspec.params["kdist"]
        return target, world_size, marker.args[0] if marker else None

    # -- running ----------------------------------------------------------

    def begin_test(self, item, runner, clause):
        self.current = TestRecord(item.nodeid, runner.target, runner.world_size, clause)
        if self.device == "cuda":
            import torch

            if torch.cuda.device_count() < runner.world_size:
                pytest.skip(f"world size {runner.world_size} needs {runner.world_size} GPUs for NCCL; "
                            f"{torch.cuda.device_count()} visible")
        reason = registry.load_target(runner.target).unsupported(clause) if clause else None
        if reason:
            pytest.skip(f"unsupported: {reason}")

    def record(self, item, call, rep):
        target, world_size, clause = self.item_case(item)
        if clause is None:
            return
        outcome = None
        if rep.when == "setup" and rep.skipped:
            outcome = "skipped"
        elif rep.when == "setup" and rep.failed or rep.when == "call":
            outcome = classify(rep)
        if outcome is None:
            return
        self.recorded = True
        text = str(rep.longrepr) if rep.longrepr else ""
        record = self.current if self.current and self.current.nodeid == item.nodeid else None
        examples = record.examples if record else 0
        if outcome == "failed":
            rep.sections.append(("kdist replay", self.replay_hint(item, target, world_size, record)))
        reason = skip_reason(rep) if outcome in ("skipped", "xfailed", "xpassed") else failure_reason(text)
        self.builder.record(target=target, clause=clause, world_size=world_size, nodeid=item.nodeid,
                            outcome=outcome, examples=examples, reason=reason,
                            failing_example=falsifying_example(text, record) if outcome == "failed" else None,
                            examples_to_failure=record.first_failure_at if record else None)

    def replay_hint(self, item, target, world_size, record):
        after = f" (first failure after {record.first_failure_at} examples)" if record and record.first_failure_at else ""
        return (
            f"replay this test{after}:\n  KDIST_TARGET={target} {sys.executable} -m pytest '{item.nodeid}' "
            f"--kdist-world-sizes={world_size} --kdist-profile={self.profile}\n"
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

    def header(self):
        import hypothesis
        import torch

        return {
            "target": ",".join(self.targets),
            "keras_version": self.keras_version,
            "keras_origin": self.keras_origin,
            "torch_version": torch.__version__,
            "hypothesis_version": hypothesis.__version__,
            "profile": self.profile,
            "world_sizes": self.world_sizes,
            "device": self.device,
            "backend": "nccl" if self.device == "cuda" else "gloo",
            "baseline": str(self.baseline.path) if self.baseline.path else None,
            "target_selected_by": self.target_source,
            "targets": {t: registry.load_target(t).describe() for t in self.targets},
        }

    def header_lines(self):
        h = self.header()
        return [
            f"kdist-props: target={h['target']} world sizes={h['world_sizes']} device={h['device']} "
            f"backend={h['backend']} profile={h['profile']} deadline={self.deadline:g}s "
            f"(target from {h['target_selected_by']})",
            f"kdist-props: keras {h['keras_version']} ({h['keras_origin']}), torch {h['torch_version']}, "
            f"hypothesis {h['hypothesis_version']}, baseline {h['baseline']}",
        ]

    def expected_cells(self):
        return [(c.id, ws) for c in contract.CLAUSES for ws in self.world_sizes]

    def finish(self):
        self.pools.close_all()
        header = self.header()
        header["backend_limitations"] = sorted(self.backend_limitations)
        header["respawned_pools"] = len(self.pools.respawns)
        if not self.recorded:
            return  # no property ran (e.g. only the suite's own tests)
        expected_by_target = [t for t in self.targets if not t.startswith(registry.MUTANT_PREFIX)]
        built = self.builder.build(header, self.expected_cells(), expected_by_target)
        md_path = os.path.splitext(self.report_path)[0] + ".md"
        report.write(built, self.report_path, md_path)
        self.summary = report.summary_lines(built) + [f"report: {self.report_path} and {md_path}"]
        self.summary += [f"backend limitation (not a target bug): {line}" for line in header["backend_limitations"]]


# How a rank's traceback names the target's own verdicts (targets/base.py).
TARGET_VERDICTS = {"kdist_props.targets.base.Incompatible": "incompatible",
                   "kdist_props.targets.base.Unsupported": "unsupported"}


def target_verdict(cause):
    """`incompatible: <what was found>` or `unsupported: <missing piece>` when a
    rank's exception line is one of the target's verdicts, else None."""
    exception, _, message = cause.partition(": ")
    status = TARGET_VERDICTS.get(exception)
    return f"{status}: {message}" if status else None


def target_source(config):
    if any(str(arg).startswith("--kdist-target") for arg in config.invocation_params.args):
        return "--kdist-target"
    return "KDIST_TARGET" if os.environ.get("KDIST_TARGET") else "default"


def examples_to_first_failure(stats):
    """Test cases Hypothesis ran up to and including the first failing one."""
    count = 0
    for phase in ("explicit", "reuse", "generate"):
        for case in stats.get(f"{phase}-phase", {}).get("test-cases", []):
            count += 1
            if case.get("status") == "interesting":
                return count
    return None


def classify(rep):
    if hasattr(rep, "wasxfail"):
        return "xfailed" if rep.skipped else "xpassed"
    if rep.failed and "XPASS(strict)" in str(rep.longrepr):
        return "xpassed"
    return rep.outcome


def skip_reason(rep):
    if hasattr(rep, "wasxfail"):
        return rep.wasxfail
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return longrepr[2].removeprefix("Skipped: ")
    return str(longrepr)


def failure_reason(text):
    """The error or assertion line of a failure, without pytest's and
    ExceptionGroup's framing characters."""
    error_lines = [line[1:] for line in text.splitlines() if line.startswith("E ")]
    for lines in (error_lines, text.splitlines()):
        lines = [line.strip(" |+-") for line in lines]
        for line in lines:
            if re.match(r"^([\w.]+(Error|Exception|Crash|Hang|Desync|Limitation)|assert)\b", line):
                return line
    return next((line.strip(" |+-") for line in text.splitlines() if line.strip(" |+-")), "")


def falsifying_example(text, record):
    """Hypothesis' shrunk example as it printed it: the failing call and its labelled draws."""
    # pytest prefixes "E "; ExceptionGroups (several distinct failures) frame lines with "|".
    lines = [re.sub(r"^(E )?(\s*\| )?", "", line) for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines)
                  if line.lstrip().startswith(("Falsifying", "Failing test case"))), None)
    if start is None:
        return None
    indent = len(lines[start]) - len(lines[start].lstrip())
    kept = []
    for line in lines[start:]:
        line = line[indent:] if line[:indent].isspace() else line.lstrip()
        if not line.strip() or line.startswith(("You can reproduce", "@reproduce_failure", "Explanation:")):
            break
        kept.append(line.rstrip())
    return "\n".join(kept)
