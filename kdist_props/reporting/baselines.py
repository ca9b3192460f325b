"""Known failures of a target version, kept as data (`baselines/<target>-<version>.toml`).

The plugin runs matching tests as strict xfails, so a Keras upgrade that fixes
a known failure shows up as an unexpected pass instead of passing quietly.
Entries that match no collected test are reported by the caller: a stale or
misspelled entry would otherwise hide nothing and be noticed by no one.

An entry selects tests by clause (or node id) and world size. Its optional
`match`, a regular expression searched in each failure's reason line (the
line the report prints), pins the known failure to its known cause: a test
that fails for another reason is reported as `fail` with that reason, not as
`known-failure` (see session.Session.record).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

_KEYS = {"clause", "test", "world_size", "reason", "match", "param", "strict"}


@dataclass(frozen=True)
class KnownFailure:
    reason: str
    clause: str | None = None     # matches every test of this clause
    test: str | None = None       # a nodeid, or a nodeid without its [parameters]
    world_size: int | None = None  # None: every world size
    match: str | None = None      # a regex every failure's reason line must contain; None: any reason
    param: str | None = None      # a word the test's [parameters] must contain (e.g. "DataParallel")
    # False: the test may pass (its failure is not found in every run of a
    # random profile); it is still reported, as unexpected-pass, when it does.
    strict: bool = True

    def matches(self, nodeid: str, clause: str | None, world_size: int | None) -> bool:
        if self.world_size is not None and world_size != self.world_size:
            return False
        if self.param is not None and self.param not in nodeid.partition("[")[2].rstrip("]").split("-"):
            return False
        if self.test is not None:
            return nodeid == self.test or nodeid.startswith(self.test + "[")
        return clause == self.clause

    def explains(self, failure_reason: str) -> bool:
        """Whether a failure with this reason line is the known one."""
        return self.match is None or re.search(self.match, failure_reason) is not None


@dataclass
class Baseline:
    path: Path | None = None
    entries: list[KnownFailure] = field(default_factory=list)
    _matched: set[int] = field(default_factory=set, repr=False)

    def match(self, nodeid: str, clause: str | None, world_size: int | None) -> KnownFailure | None:
        """The first entry that covers this test, remembering it was used."""
        for index, entry in enumerate(self.entries):
            if entry.matches(nodeid, clause, world_size):
                self._matched.add(index)
                return entry
        return None

    def unmatched(self) -> list[KnownFailure]:
        return [e for i, e in enumerate(self.entries) if i not in self._matched]


def baseline_path(directory, target: str, version: str) -> Path:
    return Path(directory) / f"{target}-{version}.toml"


def load_baseline(directory, target: str, version: str) -> Baseline:
    path = baseline_path(directory, target, version)
    if not path.is_file():
        return Baseline()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    return Baseline(path=path, entries=_parse(path, data))


def _parse(path: Path, data: dict) -> list[KnownFailure]:
    extra = set(data) - {"known_failure"}
    if extra:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(extra)}; "
                         "expected only [[known_failure]] tables")
    tables = data.get("known_failure", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{path}: known_failure must be an array of tables ([[known_failure]])")
    return [_entry(f"{path}: known_failure #{n}", t) for n, t in enumerate(tables, start=1)]


def _entry(where: str, table: dict) -> KnownFailure:
    unknown = set(table) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    reason = table.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"{where}: needs a non-empty string 'reason'")
    # Exactly one selector, so an entry's scope is never ambiguous.
    if ("clause" in table) == ("test" in table):
        raise ValueError(f"{where}: needs exactly one of 'clause' or 'test'")
    for key in ("clause", "test"):
        if key in table and (not isinstance(table[key], str) or not table[key]):
            raise ValueError(f"{where}: '{key}' must be a non-empty string")
    world_size = table.get("world_size")
    # bool is an int subclass; `world_size = true` is a typo, not a size.
    if world_size is not None and (type(world_size) is not int or world_size < 1):
        raise ValueError(f"{where}: 'world_size' must be a positive integer, got {world_size!r}")
    match = table.get("match")
    if match is not None:
        if not isinstance(match, str) or not match:
            raise ValueError(f"{where}: 'match' must be a non-empty string (a regular expression)")
        try:
            re.compile(match)
        except re.error as exc:
            raise ValueError(f"{where}: 'match' is not a valid regular expression: {exc}") from None
    param = table.get("param")
    if param is not None and (not isinstance(param, str) or not param):
        raise ValueError(f"{where}: 'param' must be a non-empty string")
    strict = table.get("strict", True)
    if type(strict) is not bool:
        raise ValueError(f"{where}: 'strict' must be true or false, got {strict!r}")
    return KnownFailure(reason=reason.strip(), clause=table.get("clause"), test=table.get("test"),
                        world_size=world_size, match=match, param=param, strict=strict)
