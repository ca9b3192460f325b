"""The session's settings, parsed and checked once into a frozen SessionConfig
before any rank starts: a bad one is a one-line ConfigError."""

import os
from dataclasses import dataclass

from hypothesis import settings

from kdist_props.harness import profiles
from kdist_props.environment import ConfigError, keras_checkout
from kdist_props.targets import registry

MAX_CPU_RANKS_PER_CORE = 4


@dataclass(frozen=True)
class SessionConfig:
    targets: tuple
    world_sizes: tuple
    device: str
    deadline: float  # seconds one example may take on the ranks
    startup_timeout: float
    profile: str
    report_path: str
    baselines: str  # folder of known-failure files
    mutant_scope: str
    target_source: str  # what selected the target: --kdist-target, KDIST_TARGET or default
    keras_version: str
    keras_origin: str
    torchrun: str = None  # HOST:PORT where torchrun-launched ranks dial in; None: local pools
    budget_s: float = None  # --kdist-budget in seconds: round robin until spent (budget.py)

    @property
    def backend(self):
        return "nccl" if self.device == "cuda" else "gloo"

    @classmethod
    def from_pytest(cls, config):
        """Parse and check pytest's options; load the Hypothesis profile."""
        import kdist_props

        if kdist_props.ENVIRONMENT_ERROR is not None:
            raise kdist_props.ENVIRONMENT_ERROR
        option = config.getoption
        keras_version, keras_origin = keras_facts()
        targets = tuple(t.strip() for t in option("--kdist-target").split(",") if t.strip())
        for target in targets:
            registry.validate(target)
        device = option("--kdist-device")
        torchrun = option("--kdist-torchrun")
        world_sizes = parse_world_sizes(option("--kdist-world-sizes"), device, local=not torchrun)
        if device == "cuda" and not torchrun:
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--kdist-device=cuda, but torch {torch.__version__} sees no CUDA GPU: "
                                  "use --kdist-device=cpu (gloo) or run on a machine with GPUs")
        explicit_profile = config.getoption("--hypothesis-profile", None)
        profile = explicit_profile or option("--kdist-profile") or profiles.default_profile()
        if profile not in profiles.PROFILES and not explicit_profile:
            raise ConfigError(f"--kdist-profile={profile!r}: choose one of {', '.join(profiles.PROFILES)}")
        settings.load_profile(profile)
        return cls(
            targets=targets, world_sizes=tuple(world_sizes), device=device, deadline=option("--kdist-deadline"),
            startup_timeout=option("--kdist-startup-timeout"), profile=profile,
            report_path=option("--kdist-report"), baselines=option("--kdist-baselines"),
            mutant_scope=option("--kdist-mutant-scope"), target_source=target_source(config),
            keras_version=keras_version, keras_origin=keras_origin, torchrun=torchrun,
            budget_s=option("--kdist-budget") and option("--kdist-budget") * 60,
        )


def parse_world_sizes(text, device, local=True):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--kdist-world-sizes={text!r}: give positive integers separated by commas, e.g. 1,2,4")
    if device == "cpu" and local:  # torchrun ranks run on other hosts
        limit = MAX_CPU_RANKS_PER_CORE * (os.cpu_count() or 1)
        if max(sizes) > limit:
            raise ConfigError(
                f"world size {max(sizes)} needs {max(sizes)} rank processes, more than this machine's "
                f"{os.cpu_count()} cores can run ({limit} at most): lower --kdist-world-sizes"
            )
    return sorted(set(sizes))


def keras_facts():
    try:
        import keras
    except ImportError as error:
        raise ConfigError(f"Keras cannot be imported ({error}): pip install 'keras>=3.13' "
                          "or point KDIST_KERAS at a Keras checkout") from None

    origin = keras_checkout() or os.path.dirname(os.path.dirname(keras.__file__))
    return keras.__version__, ("checkout " if keras_checkout() else "installed ") + origin


def target_source(config):
    if any(str(arg).startswith("--kdist-target") for arg in config.invocation_params.args):
        return "--kdist-target"
    return "KDIST_TARGET" if os.environ.get("KDIST_TARGET") else "default"
