"""Targets for the verdict selftest (test_verdicts.py), loaded as
`py:tests.selftest.stub_targets:<class>`: every hook a body calls raises,
the same way, so every test of every clause ends the way that exception says."""

from kdist_props.targets.base import Incompatible, Target, Unsupported

# Hooks the suite's bodies call; version, describe, unsupported and reset are
# the target's lifecycle, which the harness calls between runs.
LIFECYCLE = {"version", "describe", "unsupported", "reset"}
HOOKS = [name for name, member in vars(Target).items()
         if callable(member) and not name.startswith("_") and name not in LIFECYCLE]


class StubError(Exception):
    """An ordinary exception: a target bug, as far as the suite can tell."""


def raising(error_type):
    """A Target whose every hook raises `error_type`, naming the hook."""

    def hook(name):
        def raise_it(self, *args, **kwargs):
            raise error_type(f"stub target: {name} raises {error_type.__name__}")

        raise_it.__name__ = name
        return raise_it

    namespace = {name: hook(name) for name in HOOKS}
    namespace["version"] = lambda self: "stub"
    return type(f"Raises{error_type.__name__}", (Target,), namespace)


RaisesUnsupported = raising(Unsupported)
RaisesIncompatible = raising(Incompatible)
RaisesStubError = raising(StubError)
