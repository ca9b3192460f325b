"""How one example can fail on the ranks, each with a report a person can read."""

import re

# "ValueError: ...", "torch.distributed.DistBackendError: ...", "Fatal Python error: ..."
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)|Fatal Python error)\b.*")


class RankFailure(Exception):
    """Base class: the example failed on the ranks (not in the driver)."""


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
        """One line that says what went wrong: the exception a rank raised, else
        the first line of the lowest rank's report (how it died, or where it hung)."""
        for rank in sorted(self.details):
            for line in reversed(self.details[rank].strip().splitlines()):
                if EXCEPTION_LINE.match(line.strip()):
                    return line.strip()
        for rank in sorted(self.details):
            lines = [line.strip() for line in self.details[rank].strip().splitlines() if line.strip()]
            if lines:
                where = next((line for line in lines if line.startswith("File ") and "<frozen" not in line), "")
                return f"rank {rank}: {lines[0]}" + (f" {where}" if where and lines[0].endswith(":") else "")
        return ""


class RankError(RankFailure):
    """One or more ranks raised; details hold each rank's traceback."""



class RankHang(RankFailure):
    """The dispatch deadline passed; details hold each rank's stack dump."""



class RankCrash(RankFailure):
    """A rank process died (exit, signal); details say how."""


    def cause(self):
        for rank in sorted(self.details):
            first = self.details[rank].strip().splitlines()[0] if self.details[rank].strip() else ""
            if first.startswith(("killed by", "exited with")):
                return f"rank {rank} {first}"
        return super().cause()


class RankDesync(RankFailure):
    """Ranks that must agree returned different observations."""



class BackendLimitation(RankError):
    """The communication backend, not the target, refused the operation
    (for example gloo and int16). Reported apart from target bugs."""


    MARKERS = ("Invalid scalar type", "Unsupported dtype", "not supported for gloo")

    @classmethod
    def matches(cls, tracebacks):
        return any(m in tb for tb in tracebacks for m in cls.MARKERS)
