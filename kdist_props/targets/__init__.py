"""Implementations under test, behind one interface (see base.Target)."""


def load(name, fresh=False):
    from kdist_props.targets.registry import load_target

    return load_target(name, fresh)
