"""Every message between the driver, the fork server and the ranks, and their one framing.

All are frozen dataclasses (or the SHUTDOWN constant), pickled whole and sent
as one length-prefixed frame over a multiprocessing Connection (`send`,
`recv`): the fork server's pipes, the local ranks' Unix sockets and the
torchrun ranks' TCP connections alike. Plain pickle, not multiprocessing's:
torch registers reducers there that move tensors through shared memory; we
want bytes, whatever the dtype.
"""

import pickle
from dataclasses import dataclass

SHUTDOWN = "shutdown"  # driver -> rank: leave (destroy the process group, then exit)


def send(conn, message):
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def recv(conn):
    return pickle.loads(conn.recv_bytes())


# -- driver <-> fork server (zygote.py) -------------------------------------------

@dataclass(frozen=True)
class ZygoteReady:
    pid: int


@dataclass(frozen=True)
class Fork:
    """Fork a rank that runs bringup.local_rank(*args)."""

    args: tuple


@dataclass(frozen=True)
class Forked:
    pid: int


@dataclass(frozen=True)
class Reap:
    pid: int


@dataclass(frozen=True)
class Reaped:
    code: int  # exit status, negative for a signal; None when it was not our child


# -- bring-up: a rank joins the driver and its process group (bringup.py) ---------

@dataclass(frozen=True)
class Hello:
    """Rank -> driver, first message on its main connection."""

    rank: int
    world_size: int
    host: str
    pid: int
    restart_count: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT on this rank's node


@dataclass(frozen=True)
class Welcome:
    """Driver -> rank: how to join the process group. Rank 0 opens the
    rendezvous store (store_port None) and answers with StoreAddress; the
    others get its address. `preload`: modules to import before saying Ready
    (what bodies and targets need: the first example must not pay for it)."""

    device: str
    pg_timeout_s: float
    store_host: str = None
    store_port: int = None
    preload: tuple = ()


@dataclass(frozen=True)
class StoreAddress:
    """Rank 0 -> driver: where its rendezvous store listens."""

    host: str
    port: int


@dataclass(frozen=True)
class RankUsage:
    """What a rank holds after a run: OS threads and live torch process groups
    (gloo keeps ~3 threads per group, so a target that leaks groups shows here)."""

    threads: int
    process_groups: int


@dataclass(frozen=True)
class Ready:
    """Rank -> driver on its main connection: in the process group `group`
    (a token rank 0 drew and broadcast, the same on every rank of one start)."""

    group: str
    usage: RankUsage


# -- torchrun ranks' control connection (remote_rank.py) ------------------------------

@dataclass(frozen=True)
class Control:
    """Rank -> driver, first message on its control connection."""

    group: str
    rank: int


@dataclass(frozen=True)
class DumpStacks:
    """Driver -> rank on the control connection: answer with Stacks."""


@dataclass(frozen=True)
class Stacks:
    text: str


@dataclass(frozen=True)
class Exit:
    """Driver -> rank on the control connection: leave now with `code`,
    wherever the main thread is."""

    code: int


# -- running examples ------------------------------------------------------------------

@dataclass(frozen=True)
class RunRequest:
    """Driver -> every rank: `setup(ctx, request)` when given (the layer above
    the cluster prepares the rank, e.g. its target), then `body(ctx, example)`.
    `seq` numbers the runs of one pool; the reply must carry it back."""

    seq: int
    body: object  # a module-level function, pickled by reference
    example: object
    target: str = None
    stateful: bool = False  # keep ctx.state (and what setup keeps) from the previous run
    clean_target: bool = False  # for setup: a fresh target and cleared global state first
    setup: object = None  # a module-level function, pickled by reference


@dataclass(frozen=True)
class RaisedOutcome:
    """What a rank's run raised, described on the rank (cluster/outcome.py).
    The driver decides from these fields, never from the traceback text."""

    type: str  # qualified name of the exception's class, e.g. "ValueError", "kdist_props.targets.base.Unsupported"
    message: str
    traceback: str  # for people only
    verdict: str = None  # the suite's own verdict ("unsupported", "incompatible"), else None: a failure
    refused: tuple = None  # (message, collectives): looks like a backend refusing a dtype in a collective

    @property
    def headline(self):
        """`Type: first line of the message`, the way Python ends a traceback."""
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        name = self.type.rpartition(".")[2]
        return f"{name}: {first}" if first else name


@dataclass(frozen=True)
class RunReply:
    """Rank -> driver: the observation (ok) or a RaisedOutcome (not ok)."""

    seq: int
    rank: int
    ok: bool
    value: object
    usage: RankUsage = None
