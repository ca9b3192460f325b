"""The driver side of torchrun mode: a pool whose ranks torchrun launches,
on this host or others, and which dial in over TCP.

The driver listens on an address the user gives (HOST:PORT, reachable from
every node) and authenticates every connection with KDIST_AUTHKEY. A pool is
one start of the torchrun job: WORLD_SIZE ranks that dialed in, joined one
process group (env://, torchrun's store) and said Ready with the same group
token. Running examples is the local pool's own code (Pool.run); what differs
is how ranks are reached when they misbehave:

- stack dumps: a DumpStacks request on each rank's control connection, which
  a watchdog thread answers with faulthandler's dump of every thread;
- a hang or a crash: every rank is told to Exit(REPLACED); torchrun's agents
  see failed workers and restart them (--max-restarts), and the restarted
  workers dial in again as the next pool. The driver cannot SIGKILL a rank on
  another host, and need not: the agent is the process manager there;
- the end of the session: SHUTDOWN, the ranks exit 0, the agents finish.
"""

import multiprocessing.connection as mpc
import os
import socket
import time

from kdist_props.cluster.errors import RankHang
from kdist_props.cluster.pool import SHUTDOWN_GRACE_S, Pool, PoolManager
from kdist_props.cluster.messages import (Control, DumpStacks, Exit, Hello, Ready, Stacks, StoreAddress, Welcome,
                                          recv, send)
from kdist_props.cluster.remote_rank import (REPLACED, authenticate, authkey_from_environment, format_address,
                                             receive_timeout)
from kdist_props.environment import ConfigError

HANDSHAKE_TIMEOUT_S = 10.0  # a peer that connects and then says nothing must not stall the driver
DUMP_WAIT_S = 5.0  # dumps cross the network


class RemoteRank:
    """A rank on some host, seen through its control connection: that
    connection ends when the process does (its exit code is torchrun's to log)."""

    def __init__(self, hello, control):
        self.hello = hello
        self.pid = hello.pid
        self.control = control
        self.sentinel = control  # readable once the process has ended: it never speaks unasked

    def has_ended(self):
        return self.control.poll(0)

    def reap(self):
        return None  # not ours to wait for: torchrun's agent reaps it

    def describe(self):
        return f"rank {self.hello.rank} on {self.hello.host}, pid {self.pid}"


class RemotePool(Pool):
    """The ranks of one start of a torchrun job; Pool's interface and dispatch."""

    def __init__(self, listener, authkey, world_size, *, device="cpu", startup_timeout_s=180.0, pg_timeout_s=600.0,
                 preload=()):
        super().__init__(None, world_size, device=device, startup_timeout_s=startup_timeout_s,
                         pg_timeout_s=pg_timeout_s, preload=preload)
        self.listener = listener
        self.authkey = authkey
        self.diagnostics = RemoteDiagnostics(self)
        self.restart_counts = ()  # torchrun's restart count on each rank's node
        self._store = None  # (host, port) of the rendezvous store rank 0 opened, while starting
        self._store_owner = None  # rank 0's main connection

    # -- lifecycle -------------------------------------------------------

    def start(self):
        """Wait for a whole group of ranks: accept, welcome, and keep the first
        group token that every rank reports Ready with. Ranks of an earlier
        start that is being torn down may still dial in; they never complete a
        group and are dismissed."""
        began = time.monotonic()
        deadline = began + self.startup_timeout_s
        joining = {}  # main connection -> Hello, until its Ready
        ready = {}  # group -> {rank: (main connection, Hello, RankUsage)}
        controls = {}  # group -> {rank: control connection}
        try:
            while (group := self._complete(ready, controls)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RankHang(
                        f"torchrun pool of {self.world_size} did not start within {self.startup_timeout_s:.0f} s "
                        f"(--kdist-startup-timeout): {self._progress(joining, ready, controls)}", {})
                waiting = {self.listener: None, **{conn: None for conn in joining}}
                for group_ranks in (*ready.values(), *controls.values()):
                    for entry in group_ranks.values():
                        waiting[entry[0] if isinstance(entry, tuple) else entry] = None
                for conn in mpc.wait(list(waiting), min(remaining, 1.0)):
                    if conn is self.listener:
                        self._accept(joining, controls)
                    elif conn in joining:
                        self._joined(conn, joining, ready)
                    else:  # a rank that was ready ended before its group completed
                        _forget(conn, ready, controls)
        except BaseException:
            _dismiss(joining, ready, controls)
            raise
        members = ready.pop(group)
        self.conns = {r: conn for r, (conn, _, _) in members.items()}
        self.procs = [RemoteRank(members[r][1], controls[group].pop(r)) for r in range(self.world_size)]
        self.pids = [proc.pid for proc in self.procs]
        self.restart_counts = tuple(proc.hello.restart_count for proc in self.procs)
        self.usage = {r: usage for r, (_, _, usage) in members.items()}
        self.fresh = self.leaked()
        self.max_threads = self.fresh.threads
        _dismiss(joining, ready, controls)
        self.startup_s = time.monotonic() - began
        return self

    def _complete(self, ready, controls):
        for group, members in ready.items():
            if len(members) == self.world_size and len(controls.get(group, {})) == self.world_size:
                return group
        return None

    def _accept(self, joining, controls):
        sock, _ = self.listener.accept()
        try:
            conn = authenticate(sock, self.authkey, server=True, timeout_s=HANDSHAKE_TIMEOUT_S)
        except (mpc.AuthenticationError, OSError, EOFError, ValueError):
            return  # not one of ours (the rank side says why in its log), or gone already
        try:
            message = first_message(conn)
        except (OSError, EOFError):
            conn.close()
            return
        if isinstance(message, Hello):
            if message.world_size != self.world_size:
                conn.close()
                raise ConfigError(f"a torchrun rank on {message.host} has WORLD_SIZE={message.world_size}, "
                                  f"but this pool runs world size {self.world_size}: give --kdist-world-sizes "
                                  "the product of torchrun's --nnodes and --nproc-per-node")
            joining[conn] = message
            if message.rank == 0:
                send(conn, Welcome(self.device, self.pg_timeout_s, preload=self.preload))
            elif self._store is not None:
                send(conn, Welcome(self.device, self.pg_timeout_s, *self._store, self.preload))
        elif isinstance(message, Control):
            controls.setdefault(message.group, {})[message.rank] = conn
        else:
            conn.close()

    def _joined(self, conn, joining, ready):
        """A joining rank spoke: rank 0's store address (relayed to the others), or Ready."""
        try:
            message = recv(conn)
        except (EOFError, OSError):
            del joining[conn]
            conn.close()  # it died joining the process group; torchrun restarts its node
            if conn is self._store_owner:
                self._store = self._store_owner = None
            return
        if isinstance(message, StoreAddress):
            self._store, self._store_owner = (message.host, message.port), conn
            for other, hello in joining.items():
                if hello.rank != 0:
                    send(other, Welcome(self.device, self.pg_timeout_s, *self._store, self.preload))
            return
        if not isinstance(message, Ready):
            return  # nothing else is said while joining
        hello = joining.pop(conn)
        ready.setdefault(message.group, {})[hello.rank] = (conn, hello, message.usage)

    def _progress(self, joining, ready, controls):
        best = max((len(members) for members in ready.values()), default=0)
        return (f"{len(joining)} rank(s) joining the process group, at most {best} of {self.world_size} ready in one "
                f"group; is torchrun running with --driver={format_address(self.listener.getsockname()[:2])}, "
                "the same KDIST_AUTHKEY and restarts left (--max-restarts)?")

    def _after_shutdown(self):
        self._end(0)  # they exit 0, and torchrun's agents finish

    def kill(self):
        """Make every rank exit with REPLACED, wherever it is: its node's agent
        restarts the workers, which form the next pool."""
        self.broken = True
        self._end(REPLACED)

    def _end(self, code):
        for proc in self.procs:
            try:
                send(proc.control, Exit(code))
            except OSError:
                pass
        # Keep the main connections open until the processes have gone: a
        # rank whose main connection ends first would leave with 0 (rank.serve).
        self._wait_for_exits(time.monotonic() + SHUTDOWN_GRACE_S)
        for conn in [*self.conns.values(), *(proc.control for proc in self.procs)]:
            conn.close()
        self.conns = {}
        self.procs = []
        self.closed = True
        self.broken = True

    def _wait_for_exits(self, deadline):
        _wait_for_eof([proc.control for proc in self.procs if not proc.control.closed], deadline)


class RemoteDiagnostics:
    """What a torchrun pool's ranks say when they fail: the driver cannot read
    their logs or signal them, so a stack dump is asked of each rank's watchdog
    thread, and a dead rank's exit code and stderr are in torchrun's log."""

    def __init__(self, pool):
        self.pool = pool

    def death_reports(self, dead):
        return {r: f"connection lost: the process ended ({self.pool.procs[r].describe()}; "
                   f"torchrun's log on {self.pool.procs[r].hello.host} has its exit code and stderr)"
                for r in dead}

    def log_tails(self):
        return {}  # a remote rank's output is in torchrun's log on its host

    def stack_dumps(self, ranks, note):
        """Ask each rank's watchdog thread for every thread's stack."""
        asked = {}
        for r in ranks:
            try:
                send(self.pool.procs[r].control, DumpStacks())
                asked[self.pool.procs[r].control] = r
            except OSError:
                pass
        dumps = {r: f"{note}\n(no dump: the control connection is closed)" for r in ranks}
        deadline = time.monotonic() + DUMP_WAIT_S
        while asked and (remaining := deadline - time.monotonic()) > 0:
            for conn in mpc.wait(list(asked), remaining):
                r = asked.pop(conn)
                try:
                    message = recv(conn)
                except (EOFError, OSError):
                    continue
                if isinstance(message, Stacks):
                    dumps[r] = f"{note} ({self.pool.procs[r].describe()})\n{message.text}"
        for r in asked.values():
            dumps[r] = (f"{note}\n(no dump within {DUMP_WAIT_S:g} s: the watchdog thread of "
                        f"{self.pool.procs[r].describe()} did not run; native code may hold the GIL)")
        return dumps


class TorchrunPools(PoolManager):
    """PoolManager's interface over one torchrun job of `world_size` ranks."""

    def __init__(self, address, world_size, authkey, *, device="cpu", startup_timeout_s=180.0, preload=()):
        super().__init__(device=device, startup_timeout_s=startup_timeout_s, preload=preload)
        self.world_size = world_size
        self.authkey = authkey
        # Bound now, for the whole session: ranks may dial in before the first
        # test needs them, and every restart of the job dials the same address.
        self.listener = socket.create_server(address, family=_family(address[0]), backlog=64)

    @classmethod
    def from_option(cls, text, world_sizes, *, device, startup_timeout_s, preload=()):
        """The pools of `--kdist-torchrun=HOST:PORT` (env KDIST_TORCHRUN) for a
        session of `world_sizes`; ConfigError when they do not fit torchrun mode."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(f"--kdist-torchrun={text!r}: give the HOST:PORT the torchrun nodes dial "
                              "(--driver of kdist_props.cluster.remote_rank)")
        if len(world_sizes) != 1:
            raise ConfigError(f"--kdist-torchrun runs the one world size of the torchrun job; got world sizes "
                              f"{world_sizes}: give --kdist-world-sizes=N with N = --nnodes x --nproc-per-node")
        try:
            authkey = authkey_from_environment()
        except KeyError as error:
            raise ConfigError(error.args[0]) from None
        try:
            return cls((host.strip("[]"), int(port)), world_sizes[0], authkey, device=device,
                       startup_timeout_s=startup_timeout_s, preload=preload)
        except OSError as error:
            raise ConfigError(f"--kdist-torchrun={text}: cannot listen there ({error})") from None

    def _start(self, world_size):
        if world_size != self.world_size:
            raise RuntimeError(f"torchrun mode runs the world size of the torchrun job ({self.world_size}), "
                               f"not {world_size}")
        pool = RemotePool(self.listener, self.authkey, world_size, device=self.device,
                          startup_timeout_s=self.startup_timeout_s, preload=self.preload).start()
        self.pools[world_size] = pool
        return pool

    def _retire(self, pool, orderly=True):
        # Orderly or not, a pool that must be replaced goes like a dead one: its
        # workers exit REPLACED, so the agents start the next pool.
        self._retired_max_threads = max(self._retired_max_threads, pool.max_threads)
        pool.kill()

    def close_all(self):
        for pool in self.pools.values():
            self._retired_max_threads = max(self._retired_max_threads, pool.max_threads)
            pool.close()
        self.pools = {}
        self.listener.close()  # workers restarted after this find no driver and exit 0


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def first_message(conn):
    """The peer's first message (still under the handshake's receive timeout), then no timeout."""
    message = recv(conn)
    with socket.socket(fileno=os.dup(conn.fileno())) as view:
        receive_timeout(view, None)
    return message


def _wait_for_eof(conns, deadline):
    """Wait until each connection has ended (its process has gone) or `deadline` passes."""
    alive = list(conns)
    while alive and (remaining := deadline - time.monotonic()) > 0:
        for conn in mpc.wait(alive, remaining):
            try:
                while conn.poll():
                    conn.recv_bytes()  # a late Stacks reply: skip to the end of the stream
            except (EOFError, OSError):
                alive.remove(conn)


def _forget(conn, ready, controls):
    for table in (*ready.values(), *controls.values()):
        for rank, entry in list(table.items()):
            if (entry[0] if isinstance(entry, tuple) else entry) is conn:
                del table[rank]
    conn.close()


def _dismiss(joining, ready, controls):
    """Let go of ranks that are not in the pool: tell those with a control
    connection to exit REPLACED (they belong to a start being torn down), and
    close their main connections only once they have gone (see RemotePool._end)."""
    told = []
    for members in controls.values():
        for conn in members.values():
            try:
                send(conn, Exit(REPLACED))
                told.append(conn)
            except OSError:
                conn.close()
    _wait_for_eof(told, time.monotonic() + SHUTDOWN_GRACE_S)
    for conn in [*told, *joining, *(entry[0] for members in ready.values() for entry in members.values())]:
        conn.close()
    joining.clear()
    ready.clear()
    controls.clear()
