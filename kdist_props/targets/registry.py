"""Target names -> implementations: `keras`, `reference`, `mutant:<name>`, and
`py:<module>:<class>`, a Target subclass of your own (an implementation you
are building, or the suite's own stub targets in its selftests)."""

import importlib

from kdist_props.environment import ConfigError

MUTANT_PREFIX = "mutant:"
CLASS_PREFIX = "py:"


def target_names():
    from kdist_props.targets.mutants import MUTANTS

    return ["keras", "reference", *(MUTANT_PREFIX + name for name in MUTANTS)]


def validate(name):
    if name.startswith(CLASS_PREFIX):
        target_class(name)
        return
    if name not in target_names():
        raise ConfigError(
            f"unknown target {name!r}: use --kdist-target (or KDIST_TARGET) with keras, reference, "
            f"py:<module>:<class> or mutant:<name>; mutants: {', '.join(n.removeprefix(MUTANT_PREFIX) for n in target_names()[2:])}"
        )


_loaded = {}


def load_target(name, fresh=False):
    """The target instance for `name`, one per process (its caches persist, as a
    backend's would); fresh=True starts a new instance, for stateful tests
    whose runs must not inherit each other's caches."""
    if fresh:
        _loaded.pop(name, None)
    if name not in _loaded:
        _loaded[name] = instantiate(name)
    return _loaded[name]


def instantiate(name):
    """A new instance of target `name` (importing only what that target needs:
    a repro of the keras target carries no in-house target)."""
    if name == "keras":
        from kdist_props.targets.keras import KerasTarget

        return KerasTarget()
    if name == "reference":
        from kdist_props.targets.reference import ReferenceTarget

        return ReferenceTarget()
    validate(name)
    if name.startswith(CLASS_PREFIX):
        target = target_class(name)()
    else:
        from kdist_props.targets.mutants import MUTANTS

        target = MUTANTS[name.removeprefix(MUTANT_PREFIX)].target_class()
    target.name = name
    return target


def target_class(name):
    """The Target subclass that `py:<module>:<class>` names; ConfigError when there is none."""
    from kdist_props.targets.base import Target

    module_name, _, class_name = name.removeprefix(CLASS_PREFIX).partition(":")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"target {name!r}: cannot load {class_name or '<class>'} from {module_name or '<module>'} "
                          f"({error}); give py:<module>:<class>") from None
    if not (isinstance(found, type) and issubclass(found, Target)):
        raise ConfigError(f"target {name!r}: {module_name}.{class_name} is not a kdist_props.targets.base.Target")
    return found
