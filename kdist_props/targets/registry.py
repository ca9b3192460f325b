"""Target names -> implementations: `keras`, `reference`, `mutant:<name>`."""

from kdist_props.environment import ConfigError

MUTANT_PREFIX = "mutant:"


def target_names():
    from kdist_props.targets.mutants import MUTANTS

    return ["keras", "reference", *(MUTANT_PREFIX + name for name in MUTANTS)]


def validate(name):
    if name not in target_names():
        raise ConfigError(
            f"unknown target {name!r}: use --kdist-target (or KDIST_TARGET) with keras, reference or "
            f"mutant:<name>; mutants: {', '.join(n.removeprefix(MUTANT_PREFIX) for n in target_names()[2:])}"
        )


_loaded = {}


def load_target(name, fresh=False):
    """The target instance for `name`, one per process (its caches persist, as a
    backend's would); fresh=True starts a new instance, for stateful tests
    whose runs must not inherit each other's caches."""
    if fresh:
        _loaded.pop(name, None)
    if name not in _loaded:
        validate(name)
        if name == "keras":
            from kdist_props.targets.keras import KerasTarget

            _loaded[name] = KerasTarget()
        elif name == "reference":
            from kdist_props.targets.reference import ReferenceTarget

            _loaded[name] = ReferenceTarget()
        else:
            from kdist_props.targets.mutants import MUTANTS

            mutant = MUTANTS[name.removeprefix(MUTANT_PREFIX)]
            target = mutant.target_class()
            target.name = name
            _loaded[name] = target
    return _loaded[name]
