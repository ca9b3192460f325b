"""What a local pool's ranks say when they fail: how a dead rank ended and
the tail of its log, and every thread's stack of a rank that hangs
(faulthandler on SIGUSR1, into a file per rank)."""

import os
import signal
import time

from kdist_props.cluster.errors import describe_exit

LOG_TAIL_CHARS = 3000


class LocalDiagnostics:
    """Reads the work folder of a local pool (pool.Pool): rank<N>.log, rank<N>.stacks."""

    def __init__(self, pool):
        self.pool = pool

    def death_reports(self, dead):
        """How each dead rank ended, with its log's tail."""
        tails = self.log_tails()
        return {r: f"{describe_exit(code)}\n{tails.get(r, '')}" for r, code in dead.items()}

    def log_tails(self):
        tails = {}
        for r in range(self.pool.world_size):
            path = os.path.join(self.pool._workdir or "", f"rank{r}.log")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text = f.read().decode(errors="replace")
                if text.strip():
                    tails[r] = "log tail:\n" + text[-LOG_TAIL_CHARS:]
        return tails

    def stack_dumps(self, ranks, note):
        """SIGUSR1 each rank (faulthandler dumps every thread), then read the dumps."""
        paths = {r: os.path.join(self.pool._workdir, f"rank{r}.stacks") for r in ranks}
        for r in ranks:
            try:
                os.kill(self.pool.procs[r].pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        sizes = None
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = {r: os.path.getsize(p) if os.path.exists(p) else 0 for r, p in paths.items()}
            if all(now.values()) and now == sizes:
                break
            sizes = now
        dumps = {}
        for r, path in paths.items():
            with open(path, "rb") as f:
                dumps[r] = f"{note}\n" + (f.read().decode(errors="replace") or "(no dump)")
        return dumps
