"""How one example can fail on the ranks, each with a report a person can read."""


class RankFailure(Exception):
    """Base class: the example failed on the ranks (not in the driver)."""

    kind = "failure"

    def __init__(self, summary, details):
        self.summary = summary
        self.details = details  # {rank: text}
        super().__init__(self._format())

    def _format(self):
        parts = [f"{self.summary}: {self.cause()}" if self.cause() else self.summary]
        for rank in sorted(self.details):
            body = self.details[rank].rstrip() or "(nothing)"
            parts.append(f"--- rank {rank} ---\n{body}")
        return "\n".join(parts)

    def cause(self):
        """The last line of the lowest rank's report: usually the exception."""
        for rank in sorted(self.details):
            lines = self.details[rank].strip().splitlines()
            if lines:
                return lines[-1].strip()
        return ""


class RankError(RankFailure):
    """One or more ranks raised; details hold each rank's traceback."""

    kind = "error"


class RankHang(RankFailure):
    """The dispatch deadline passed; details hold each rank's stack dump."""

    kind = "hang"


class RankCrash(RankFailure):
    """A rank process died (exit, signal); details say how."""

    kind = "crash"


class RankDesync(RankFailure):
    """Ranks that must agree returned different observations."""

    kind = "desync"


class BackendLimitation(RankError):
    """The communication backend, not the target, refused the operation
    (for example gloo and int16). Reported apart from target bugs."""

    kind = "backend-limitation"

    MARKERS = ("Invalid scalar type", "Unsupported dtype", "not supported for gloo")

    @classmethod
    def matches(cls, tracebacks):
        return any(m in tb for tb in tracebacks for m in cls.MARKERS)
