"""How one example can fail on the ranks, each with a report a person can read.

Every field a caller decides from is typed: what each rank raised
(`outcomes`, RaisedOutcome built on the rank), how each dead rank ended
(`exit_codes`). `details` holds per-rank text for people only (tracebacks,
stack dumps, log tails); nothing reads a verdict back from it.
"""

import signal
import typing


class RankFailure(Exception):
    """Base class: the example failed on the ranks (not in the driver)."""

    def __init__(self, summary, details, *, outcomes=None, exit_codes=None):
        self.summary = summary
        self.details = details  # {rank: text}, for people
        self.outcomes = outcomes or {}  # {rank: RaisedOutcome} of the ranks that raised
        self.exit_codes = exit_codes or {}  # {rank: exit code} of the ranks that died
        super().__init__(self._format())

    def _format(self):
        parts = [self.reason()]
        # N ranks that failed alike (a body that raises everywhere) print it once.
        by_text = {}
        for rank in sorted(self.details):
            by_text.setdefault(self.details[rank].rstrip() or "(nothing)", []).append(rank)
        for body, ranks in sorted(by_text.items(), key=lambda item: item[1]):
            label = f"rank {ranks[0]}" if len(ranks) == 1 else \
                f"ranks {', '.join(map(str, ranks))} (identical traceback)"
            parts.append(f"--- {label} ---\n{body}")
        return "\n".join(parts)

    def cause(self):
        """What went wrong, typed: the lowest rank's exception (`Type: message`),
        else how the lowest dead rank ended; "" when neither is known."""
        if self.outcomes:
            return self.outcomes[min(self.outcomes)].headline
        if self.exit_codes:
            rank = min(self.exit_codes)
            return f"rank {rank} {describe_exit(self.exit_codes[rank])}"
        return ""

    def reason(self):
        """One line for reports: the cause first (so a reason starts with the
        rank's exception type), then what happened on which ranks."""
        cause = self.cause()
        return f"{cause} ({self.summary})" if cause else f"{type(self).__name__}: {self.summary}"


class RankError(RankFailure):
    """One or more ranks raised; `outcomes` hold what each raised."""

    @classmethod
    def of(cls, raised, world_size):
        """The error of the ranks in `raised` ({rank: RaisedOutcome}), the others having answered."""
        return cls(f"rank(s) {sorted(raised)} of {world_size} raised",
                   {r: outcome.traceback for r, outcome in raised.items()}, outcomes=raised)


class RankHang(RankFailure):
    """The dispatch deadline passed; details hold each rank's stack dump."""


class RankCrash(RankFailure):
    """A rank process died (exit, signal); `exit_codes` say how."""

    def cause(self):
        if self.exit_codes:  # the death is the news, whatever the others raised meanwhile
            rank = min(self.exit_codes)
            return f"rank {rank} {describe_exit(self.exit_codes[rank])}"
        return super().cause()


class RankDesync(RankFailure):
    """Ranks that must agree returned different observations."""


class ProtocolError(RankFailure):
    """A rank answered with something other than the reply to the run sent
    (wrong type, sequence number or rank): the pool is out of step and killed."""


def describe_exit(code):
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit code {code})"
    return f"exited with code {code}"


class ObservationTypeError(TypeError):
    """A body returned something other than its return annotation (raised in
    the driver, once, for all ranks)."""


def check_observation_types(body, observations):
    """Raise ObservationTypeError unless every rank's observation is an
    instance of the body's return annotation (when that is a class)."""
    try:
        expected = typing.get_type_hints(body).get("return")
    except Exception:  # an annotation the driver cannot resolve: nothing to check against
        return
    if not isinstance(expected, type):
        return
    wrong = {}
    for rank, observation in enumerate(observations):
        if not isinstance(observation, expected):
            wrong.setdefault(type(observation).__qualname__, []).append((rank, observation))
    if wrong:
        came = "; ".join(f"{name} from rank(s) {[r for r, _ in got]} (rank {got[0][0]}: {got[0][1]!r:.300})"
                         for name, got in wrong.items())
        raise ObservationTypeError(f"body {body.__module__}.{body.__qualname__} must return "
                                   f"{expected.__qualname__} (its return annotation); got {came}")
