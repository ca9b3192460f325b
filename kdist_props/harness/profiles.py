"""Our Hypothesis profiles. Registered under the names Hypothesis itself uses
for "ci", so that ours, not the built-in one, applies when CI is set."""

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

# Every example crosses processes; Hypothesis' default 200 ms deadline and its
# too_slow check would measure the pool, not the property.
_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# An explicit parent: by default a new profile inherits whatever profile is
# loaded at the time, which is Hypothesis' own "ci" on a CI machine.
_DEFAULT = settings.get_profile("default")
settings.register_profile("dev", _DEFAULT, max_examples=25, derandomize=False, **_COMMON)
settings.register_profile("ci", _DEFAULT, max_examples=60, derandomize=True, database=None, **_COMMON)
settings.register_profile(
    "nightly",
    _DEFAULT,
    max_examples=1000,
    derandomize=False,
    database=DirectoryBasedExampleDatabase(os.environ.get("KDIST_EXAMPLE_DB", ".hypothesis/kdist-nightly")),
    phases=tuple(Phase),
    **_COMMON,
)

PROFILES = ("dev", "ci", "nightly")


def default_profile():
    return os.environ.get("KDIST_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
