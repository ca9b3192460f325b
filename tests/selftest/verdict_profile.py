"""A pytest plugin (`-p tests.selftest.verdict_profile`) for test_verdicts.py:
registers the Hypothesis profile `kdist-verdicts`, the ci profile without
shrinking. A stub target fails on every example alike, so shrinking would
only cost minutes and prove nothing about verdicts."""

from hypothesis import Phase, settings

from kdist_props.harness import profiles  # noqa: F401 (registers "ci" first)

settings.register_profile("kdist-verdicts", settings.get_profile("ci"), max_examples=10,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate))
