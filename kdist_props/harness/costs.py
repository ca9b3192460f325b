"""Where a session's time went: the target's own work on the ranks, and the
harness's overhead around it, which a target that leaks or hangs drives up:
pools replaced (their ranks held too much, or died), first examples on fresh
ranks (cold caches: DTensor's sharding propagation starts empty in a new
process), and deadline waits of hanging examples. The report header and the
terminal summary print it in one line, so a user knows why a run took long."""

import contextlib
import time
from dataclasses import dataclass, field

from kdist_props.cluster.errors import RankHang


@dataclass
class RunTimes:
    """Seconds of one test's runs: those on warm ranks, and first runs on fresh ones."""

    warm_s: float = 0.0
    warm_runs: int = 0
    cold: list = field(default_factory=list)

    def cold_extra_s(self):
        """What the first runs on fresh ranks took beyond this test's mean warm
        run (nothing known without a warm run to compare with)."""
        if not self.warm_runs:
            return 0.0
        mean = self.warm_s / self.warm_runs
        return sum(max(0.0, seconds - mean) for seconds in self.cold)


@dataclass
class CostLedger:
    """The session's runs on the ranks, timed; the pools' replacement time
    comes from the PoolManager (`replacing_s`, `replaced_pools`)."""

    began: float = field(default_factory=time.monotonic)
    runs_s: float = 0.0  # every run that came back or raised, cold ones included
    waits_s: float = 0.0  # runs that ended at a deadline
    hung_runs: int = 0
    tests: dict = field(default_factory=dict)  # test id -> RunTimes

    @contextlib.contextmanager
    def run(self, test, *, cold):
        """Time one run of `test`'s body on the ranks (`cold`: the first on its
        pool). A hang's time is a deadline wait; any other ending is the target's work."""
        began, hung = time.monotonic(), False
        try:
            yield
        except RankHang:
            hung = True
            raise
        finally:
            seconds = time.monotonic() - began
            if hung:
                self.hung_runs += 1
                self.waits_s += seconds
            else:
                self._ran(test, seconds, cold)

    def _ran(self, test, seconds, cold):
        self.runs_s += seconds
        times = self.tests.setdefault(test, RunTimes())
        if cold:
            times.cold.append(seconds)
        else:
            times.warm_s += seconds
            times.warm_runs += 1

    def split(self, pools):
        """Seconds: the whole session, the target's own work, the harness's
        overhead with its parts (`pools`: the PoolManager), the first pool of
        each world size (the zygote's imports), and the driver's share (drawing
        examples, oracles, shrinking)."""
        wall = time.monotonic() - self.began
        cold = sum(times.cold_extra_s() for times in self.tests.values())
        overhead = pools.replacing_s + cold + self.waits_s
        return {"wall_s": round(wall, 1), "target_work_s": round(self.runs_s - cold, 1),
                "overhead_s": round(overhead, 1), "overhead_share": round(overhead / wall, 3) if wall else 0.0,
                "pool_replacements": pools.replaced_pools, "replacing_s": round(pools.replacing_s, 1),
                "cold_first_examples_s": round(cold, 1), "hung_examples": self.hung_runs,
                "hang_waits_s": round(self.waits_s, 1), "first_pools_s": round(pools.first_starts_s, 1),
                "driver_s": round(wall - self.runs_s - self.waits_s - pools.replacing_s - pools.first_starts_s, 1)}


def cost_line(s, leaks):
    """A CostLedger.split `s` as one line, with the worst leaker of `leaks` ({where: LeakRecord.as_dict()})."""
    worst = max(leaks.items(), key=lambda item: item[1]["groups_per_example"], default=None)
    leaked = (f"; leaks up to {worst[1]['groups_per_example']:g} process groups per example ({worst[0]})"
              if worst and worst[1]["groups_left"] else "; no process group leaked")
    return (f"time: {s['wall_s']:.0f} s = target's work {s['target_work_s']:.0f} s + harness overhead "
            f"{s['overhead_s']:.0f} s ({s['overhead_share']:.0%}: {s['pool_replacements']} pool replacements "
            f"{s['replacing_s']:.0f} s, cold first examples {s['cold_first_examples_s']:.0f} s, "
            f"{s['hung_examples']} hung examples {s['hang_waits_s']:.0f} s) + first pools {s['first_pools_s']:.0f} s "
            f"+ driver {s['driver_s']:.0f} s"
            + leaked)
