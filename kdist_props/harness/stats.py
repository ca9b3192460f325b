"""What the harness saw while running, for the report header and the terminal:
what targets leaked on the ranks, pool replacements, hangs and their
deadline waits, and proven backend limitations. The runner reports every
event here, as it happens; nothing is learned by diffing counters."""

from dataclasses import dataclass, field


@dataclass
class LeakRecord:
    """What one target left on the ranks of one world size, over the session."""

    examples: int = 0
    groups_left: int = 0  # process groups still held after the examples that made them
    threads_left: int = 0
    pool_replacements: int = 0

    def as_dict(self):
        per_example = self.examples or 1
        return {"examples": self.examples, "groups_left": self.groups_left, "threads_left": self.threads_left,
                "groups_per_example": round(self.groups_left / per_example, 3),
                "threads_per_example": round(self.threads_left / per_example, 3),
                "pool_replacements": self.pool_replacements}


@dataclass
class HarnessStats:
    leaks: dict = field(default_factory=dict)  # (target, world size) -> LeakRecord
    hangs: dict = field(default_factory=dict)  # nodeid -> runner.TestRecord of tests that hung
    backend_limitations: set = field(default_factory=set)

    def leaks_of(self, target, world_size):
        return self.leaks.setdefault((target, world_size), LeakRecord())

    def run_finished(self, target, world_size, before, after):
        """A run ended on ranks that held `before` and now hold `after` (RankUsage)."""
        leaks = self.leaks_of(target, world_size)
        leaks.examples += 1
        leaks.groups_left += max(0, after.process_groups - before.process_groups)
        leaks.threads_left += max(0, after.threads - before.threads)

    def pool_replaced(self, target, world_size):
        self.leaks_of(target, world_size).pool_replacements += 1

    def hung(self, record):
        self.hangs[record.nodeid] = record

    def backend_limitation(self, limitation):
        self.backend_limitations.add(limitation.reason())

    def facts(self, *, max_threads, long_deadline):
        """For the report header: what targets leaked on the ranks, the most
        threads a rank held, and the tests that hung (with their deadline waits)."""
        return {
            "leaks": {f"{target} w{ws}": record.as_dict() for (target, ws), record in sorted(self.leaks.items())},
            "max_threads": max_threads,
            "hangs": {nodeid: {"long_deadline_waits": r.long_waits, "short_deadline_waits": r.short_waits,
                               "short_deadline_s": round(r.short_deadline(long_deadline), 3)}
                      for nodeid, r in self.hangs.items()},
            "backend_limitations": sorted(self.backend_limitations),
        }

    @staticmethod
    def lines(facts):
        """The terminal's harness section, from `facts`."""
        lines = [f"leaks: {where}: " + ", ".join(f"{k}={v}" for k, v in leaked.items())
                 for where, leaked in facts["leaks"].items() if leaked["groups_left"] or leaked["pool_replacements"]]
        lines.append(f"max threads held by a rank: {facts['max_threads']}")
        lines += [f"hang: {nodeid}: long-deadline waits={h['long_deadline_waits']} "
                  f"short-deadline waits={h['short_deadline_waits']} (short deadline {h['short_deadline_s']:g} s)"
                  for nodeid, h in facts["hangs"].items()]
        return lines
