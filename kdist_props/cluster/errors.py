"""How one example can fail on the ranks, each with a report a person can read."""

import dataclasses
import re
import typing

from kdist_props.specs import CollectiveProbe

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
    (for example gloo and int16), as a harness probe of the same collective
    with the same dtype proved on the same pool. Reported apart from target bugs."""


class ProtocolError(RankFailure):
    """A rank answered with something other than the reply to the run sent
    (wrong type, sequence number or rank): the pool is out of step and killed."""


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


# What a communication backend says when it refuses a dtype (gloo: "Invalid
# scalar type"). Only a hint: the harness probe decides (Pool._backend_refuses).
REFUSAL_MARKERS = ("Invalid scalar type", "Unsupported dtype", "not supported for gloo")
# Collectives a traceback may name (longest first: all_gather_into_tensor before all_gather),
# as torch.distributed functions, functional collectives or their c10d ops.
COLLECTIVES = {
    "all_gather_into_tensor": "all_gather_into_tensor", "all_gather_tensor": "all_gather_into_tensor",
    "reduce_scatter_tensor": "reduce_scatter_tensor", "all_gather": "all_gather", "all_reduce": "all_reduce",
    "reduce_scatter": "reduce_scatter", "broadcast": "broadcast", "scatter": "scatter", "gather": "gather",
    "all_to_all_single": "all_to_all_single", "all_to_all": "all_to_all", "reduce": "reduce",
    # DTensor issues functional collectives and waits later, so only its own API
    # frames say which: gathering a shard (all_gather) or summing a partial (all_reduce).
    "full_tensor": ("all_gather_into_tensor", "all_reduce"),
    "redistribute": ("all_gather_into_tensor", "all_reduce"),
}
TORCH_DISTRIBUTED_FRAME = re.compile(r'File "[^"]*torch/distributed/[^"]*", line \d+, in (\w+)')


@dataclasses.dataclass(frozen=True)
class Refusal(CollectiveProbe):
    """A rank error that looks like the backend refusing `collective` on
    `dtype`, with the rank's own exception message."""

    message: str = ""

    def same_as(self, probe_outcome):
        """Whether the probe raised the same message (its exception line ends with it)."""
        return probe_outcome.endswith(self.message)


def backend_refusal(tracebacks, example):
    """The collective and dtype to probe when a rank's error looks like a
    backend dtype refusal raised inside a torch.distributed collective, else None."""
    for tb in tracebacks:
        last = next((line.strip() for line in reversed(tb.strip().splitlines()) if EXCEPTION_LINE.match(line.strip())),
                    "")
        if not any(m in last for m in REFUSAL_MARKERS):
            continue
        collectives = innermost_collective(tb)
        dtypes = example_dtypes(example)
        if collectives and dtypes:
            return [Refusal(collective, dtype, last.partition(": ")[2]) for collective in collectives for dtype in dtypes]
    return None


def innermost_collective(tb):
    """The collective(s) the innermost torch.distributed frame of `tb` may have issued."""
    names = TORCH_DISTRIBUTED_FRAME.findall(tb)
    for name in reversed(names):
        if name in COLLECTIVES:
            found = COLLECTIVES[name]
            return found if isinstance(found, tuple) else (found,)
    return ()


def example_dtypes(example):
    """Every dtype an example names: `dtype` fields of its (nested) dataclasses, dicts and tuples."""
    found = []

    def walk(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(f.name, getattr(value, f.name))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(key, item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    def visit(name, value):
        if name == "dtype" and isinstance(value, str):
            if value not in found:
                found.append(value)
        else:
            walk(value)

    walk(example)
    return found
