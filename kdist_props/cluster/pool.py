"""The driver side of a rank pool: spawn once, dispatch examples, survive faults.

The driver (pytest + Hypothesis) is never a rank, so a hung collective cannot
hang it: every dispatch has a deadline, and on expiry the pool is dumped and
killed. Ranks are forked from a forkserver that has already imported torch and
Keras, so replacing a dead pool costs a fork and a handshake.
"""

import atexit
import multiprocessing.connection as mpc
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from kdist_props.cluster.diagnostics import LocalDiagnostics
from kdist_props.cluster.dispatch import Dispatcher
from kdist_props.cluster.errors import RankCrash, RankHang
from kdist_props.cluster.messages import (SHUTDOWN, Fork, Hello, Ready, Reap, StoreAddress, Welcome,
                                          ZygoteReady, recv, send)
from kdist_props.environment import ConfigError

SHUTDOWN_GRACE_S = 5.0


class Zygote:
    """Driver-side handle on the fork server (see zygote.py)."""

    def __init__(self, preload=()):
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kdist_props.cluster.zygote", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "KDIST_DRIVER_PID": str(os.getpid())},
        )
        # Connections of their own over the pipes (they close what they own).
        self._commands = mpc.Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self._replies = mpc.Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        ready = recv(self._replies)
        assert isinstance(ready, ZygoteReady), ready

    def call(self, command):
        with self._lock:
            send(self._commands, command)
            return recv(self._replies)

    def fork(self, *rank_args):
        return self.call(Fork(rank_args)).pid

    def reap(self, pid):
        return self.call(Reap(pid)).code

    def close(self):
        self._commands.close()  # the zygote reads EOF and leaves
        self._replies.close()
        self.proc.wait(10)


class RankProcess:
    """A rank forked by the zygote: pid, a pollable sentinel, and its exit code."""

    def __init__(self, zygote, pid):
        self.zygote = zygote
        self.pid = pid
        self.sentinel = os.pidfd_open(pid)  # readable once the process has ended
        self.exitcode = None
        self._reaped = False

    def has_ended(self):
        return bool(select.select([self.sentinel], [], [], 0)[0])

    def reap(self):
        """Wait for the ended process and record its exit code (negative: signal)."""
        if not self._reaped:
            self.exitcode = self.zygote.reap(self.pid)
            self._reaped = True
            os.close(self.sentinel)
        return self.exitcode


class Pool(Dispatcher):
    """`world_size` ranks in one process group, reused across examples: their
    life (fork, handshake, shutdown, kill) and what they hold. Running requests
    on them is Dispatcher's (dispatch.py), reading their state when they fail
    is Diagnostics' (diagnostics.py)."""

    def __init__(self, zygote, world_size, *, device="cpu", startup_timeout_s=120.0, pg_timeout_s=600.0,
                 preload=()):
        self.zygote = zygote
        self.preload = tuple(preload)
        self.world_size = world_size
        self.device = device
        self.startup_timeout_s = startup_timeout_s
        self.pg_timeout_s = pg_timeout_s
        self.procs = []
        self.conns = {}
        self.pids = []
        self.store_port = None
        self.broken = False
        self.closed = False
        self.startup_s = None
        self._seq = 0
        self._workdir = None
        self.usage = {}  # rank -> RankUsage after its last run
        self.fresh = None  # the most any rank held right after start-up
        self.max_threads = 0  # the most threads any rank held after a run
        self.diagnostics = LocalDiagnostics(self)

    # -- lifecycle -------------------------------------------------------

    def start(self):
        began = time.monotonic()
        self._workdir = tempfile.mkdtemp(prefix=f"kdist-w{self.world_size}-")
        address = os.path.join(self._workdir, "driver.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(address)
            server.listen(self.world_size)
            for rank in range(self.world_size):
                pid = self.zygote.fork(rank, self.world_size, address, self._workdir)
                self.procs.append(RankProcess(self.zygote, pid))
            self._handshake(server, began + self.startup_timeout_s)
        except BaseException:
            self.kill()
            raise
        finally:
            server.close()
        self.startup_s = time.monotonic() - began
        return self

    def _handshake(self, server, deadline):
        unnamed = []
        while len(unnamed) < self.world_size:
            self._raise_if_any_died("during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RankHang(
                    f"pool of {self.world_size} did not start within {self.startup_timeout_s:.0f} s "
                    "(--kdist-startup-timeout)",
                    self.diagnostics.log_tails(),
                )
            if select.select([server], [], [], min(remaining, 0.2))[0]:
                sock, _ = server.accept()
                unnamed.append(mpc.Connection(sock.detach()))
        for conn in unnamed:
            hello = self._recv_by(conn, deadline)
            assert isinstance(hello, Hello), hello
            self.conns[hello.rank] = conn
        self.pids = [proc.pid for proc in self.procs]
        # Rank 0 opens the rendezvous store; the others learn where (bringup.py).
        send(self.conns[0], Welcome(self.device, self.pg_timeout_s, preload=self.preload))
        store = self._recv_by(self.conns[0], deadline)
        assert isinstance(store, StoreAddress), store
        self.store_port = store.port
        for rank in range(1, self.world_size):
            send(self.conns[rank], Welcome(self.device, self.pg_timeout_s, store.host, store.port, self.preload))
        replies, dead, pending = self._collect(range(self.world_size), deadline)
        if dead or pending or not all(isinstance(reply, Ready) for reply in replies.values()):
            raise RankCrash(
                f"pool of {self.world_size} failed to join its process group",
                self.diagnostics.log_tails(), exit_codes=dead,
            )
        self.usage = {r: reply.usage for r, reply in replies.items()}
        self.fresh = self.leaked()
        self.max_threads = self.fresh.threads

    def _recv_by(self, conn, deadline):
        while not conn.poll(0.2):
            self._raise_if_any_died("during start-up")
            if time.monotonic() > deadline:
                raise RankHang(f"pool of {self.world_size} stalled during start-up", self.diagnostics.log_tails())
        return recv(conn)

    def _raise_if_any_died(self, when):
        dead = {r: p.reap() for r, p in enumerate(self.procs) if p.has_ended()}
        if dead:
            raise RankCrash(f"rank(s) {sorted(dead)} died {when}", self.diagnostics.death_reports(dead), exit_codes=dead)

    def close(self):
        """Shut the ranks down in order; whatever does not leave in time is made to."""
        if self.closed:
            return
        if not self.broken:
            for conn in self.conns.values():
                try:
                    send(conn, SHUTDOWN)
                except OSError:
                    pass
            self._wait_for_exits(time.monotonic() + SHUTDOWN_GRACE_S)
        self._after_shutdown()

    def _wait_for_exits(self, deadline):
        for proc in self.procs:
            select.select([proc.sentinel], [], [], max(0.0, deadline - time.monotonic()))

    def _after_shutdown(self):
        self.kill()  # reaps them all, and frees the connections and the work folder

    def kill(self):
        """SIGKILL every rank's process group, reap them, free everything."""
        self.broken = True
        for proc in self.procs:
            # Its own group (anything it started), then itself (if it died before setpgid).
            for kill in (os.killpg, os.kill):
                try:
                    kill(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for proc in self.procs:
            proc.reap()
        for conn in self.conns.values():
            conn.close()
        self.conns = {}
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.closed = True

    def holds_too_much(self, headroom):
        """Whether a next run that adds up to `headroom` threads could take some
        rank past the thread ceiling (thread_ceiling()), or a rank holds more
        groups than that many threads would pay for."""
        ceiling = thread_ceiling()
        if ceiling == NO_CEILING:
            return False
        now = self.leaked()
        return now.threads + headroom > ceiling or now.process_groups > ceiling // THREADS_PER_GLOO_GROUP

# When a pool is replaced because its ranks pile up what targets leak. A fresh
# rank holds 5 threads and 1 process group (the world); gloo adds 3 threads per
# group it keeps (2 workers and a transport device whose loop wakes every 10 ms),
# and a leaky target (Keras master) adds groups with every mesh conversion.
# Wherever a run may start from scratch, the pool is replaced when the next run
# could take a rank past the thread ceiling: when a rank's threads plus the
# run's headroom (harness/runner.py: the most threads one run of the same test has
# added, a stateful program counting as one run) pass it, or when a rank holds
# more groups than the ceiling's threads would pay for (groups that cost no
# threads, or that a backend keeps elsewhere). Every test starts on ranks that
# hold nothing leaked, so its first run has the whole ceiling. A replacement
# costs a kill, a fork and a handshake (~100 ms at 4 ranks here) and a first
# example on cold caches (DTensor's sharding propagation cache is per process:
# ~165 ms more at 4 ranks); idle gloo threads cost less, up to a point (each
# group's transport loop wakes 100 times a second: with no ceiling at all, a
# rank of the mesh-per-variable mutant held ~2000 threads and the run took 6x
# the reference). `kdist-props leaks` sweeps the ceiling (README, "Leaky
# targets"): 512 was the fastest for both leaky mutants, 64 the slowest.
THREAD_CEILING = 512
THREADS_PER_GLOO_GROUP = 3
# The sweep's override: an integer, or `none` (never replace for leaks).
CEILING_VARIABLE = "KDIST_THREAD_CEILING"
NO_CEILING = "none"


def thread_ceiling():
    """The ceiling in force: CEILING_VARIABLE when set, else THREAD_CEILING."""
    text = os.environ.get(CEILING_VARIABLE, "").strip().lower()
    if not text:
        return THREAD_CEILING
    if text == NO_CEILING:
        return NO_CEILING
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{CEILING_VARIABLE}={text!r}: give a number of threads or {NO_CEILING!r}") from None


class PoolManager:
    """One live pool per world size for the whole session; replaces dead ones,
    and, when asked, ones whose ranks have piled up leaked groups and threads."""

    def __init__(self, *, device="cpu", startup_timeout_s=120.0, preload=()):
        self.zygote = None
        self.preload = tuple(preload)  # modules every rank imports before its first run
        self.device = device
        self.startup_timeout_s = startup_timeout_s
        self.pools = {}
        self.respawns = []  # start-up seconds of pools that replaced a dead one
        self.replacing_s = 0.0  # spent retiring pools (leaky or dead) and starting their replacements
        self.replaced_pools = 0
        self.first_starts_s = 0.0  # starting each world size's first pool
        self._retired_max_threads = 0
        thread_ceiling()  # a malformed override is a configuration error now, not mid-run
        atexit.register(self.close_all)

    def get(self, world_size):
        """The live pool of `world_size` (a new one in place of a dead one)."""
        pool = self.pools.get(world_size)
        if pool is not None and not pool.broken:
            return pool
        began = time.monotonic()
        if pool is None:
            pool = self._start(world_size)  # the first pool of the session starts the zygote too
            self.first_starts_s += time.monotonic() - began
            return pool
        self._retire(pool)
        pool = self._start(world_size)
        self.respawns.append(pool.startup_s)
        self._replaced(began)
        return pool

    def replace_if(self, world_size, predicate):
        """Replace the live pool of `world_size` with a fresh one when
        `predicate(pool)` holds (the caller knows no rank state must survive);
        return whether it did."""
        pool = self.pools.get(world_size)
        if pool is None or pool.broken or not predicate(pool):
            return False
        began = time.monotonic()
        # Killed, not shut down in order: its ranks hold nothing anyone needs,
        # and destroying what a leaky target left costs more than the fork.
        self._retire(pool, orderly=False)
        self._start(world_size)
        self._replaced(began)
        return True

    def _replaced(self, began):
        """A pool (dead, or holding too much) was replaced, starting at `began`."""
        self.replaced_pools += 1
        self.replacing_s += time.monotonic() - began

    def _start(self, world_size):
        if self.zygote is None:
            self.zygote = Zygote(self.preload)
        pool = Pool(self.zygote, world_size, device=self.device, startup_timeout_s=self.startup_timeout_s,
                    preload=self.preload).start()
        self.pools[world_size] = pool
        return pool

    def _retire(self, pool, orderly=True):
        self._retired_max_threads = max(self._retired_max_threads, pool.max_threads)
        if orderly:
            pool.close()
        else:
            pool.kill()

    @property
    def max_threads(self):
        """The most threads any rank of any pool of this manager held after a run."""
        return max([self._retired_max_threads, *(pool.max_threads for pool in self.pools.values())])

    def close_all(self):
        for pool in self.pools.values():
            self._retire(pool)
        self.pools = {}
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
