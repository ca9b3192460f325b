"""Chapter initializers (Tier B): `variable.init`.

A dense stack built under a distribution with Keras' own initializers, by a
program that calls keras.utils.set_random_seed on every rank or never seeds
(each rank then has random state of its own, as processes torchrun starts).
One test per fact, so that one bug does not hide another: ranks agree, seeded
or not; deterministic initializers give their value; seeded random ones give
what the same program gives in one process with no distribution (run here, in
the driver, out of the ranks' reach); random ones stay within the bounds their
formulas give for the global shape."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import initializers, keras_programs, oracles
from kdist_props.properties import initializers as bodies
from kdist_props.strategies.initializers import init_examples


def initialized(kdist, data, seeded=False):
    """(example, {path: initializer name}, observations by rank) of one drawn
    build; seeded: by a program that sets the seed, else seeded or not."""
    example = data.draw(init_examples(kdist.world_size, seeded), label="initialized model")
    names = dict(zip((path for path, _ in example.model.variable_shapes()), example.initializers))
    observations = kdist.run(bodies.initial_values, example)
    for rank, got in enumerate(observations):
        paths = [path for path, _ in got.values]
        assert paths == list(names), oracles.describe_mismatch(f"rank {rank} variables", list(names), paths, example)
    return example, names, observations


def values_by(observations, names, random):
    """(rank, path, initializer name, value) of every variable whose initializer is random (or deterministic)."""
    for rank, got in enumerate(observations):
        for path, value in got.values:
            if initializers.is_random(names[path]) == random:
                yield rank, path, names[path], value


@pytest.mark.clause("variable.init")
@given(data=st.data())
def test_every_rank_holds_the_same_initial_value(kdist, data):
    """Replicated or sharded, every rank reads the same full value: bit for bit, as it is moved, not computed."""
    example, names, observations = initialized(kdist, data)
    for rank, got in enumerate(observations[1:], start=1):
        for (path, value), (_, first) in zip(got.values, observations[0].values):
            oracles.assert_identical(value, first, f"rank {rank} vs rank 0 {path} ({names[path]})", example)


@pytest.mark.clause("variable.init")
@given(data=st.data())
def test_deterministic_initializers_give_their_global_value(kdist, data):
    example, names, observations = initialized(kdist, data)
    for rank, path, name, value in values_by(observations, names, random=False):
        expected = initializers.expected_value(name, value.shape)
        oracles.assert_identical(value, expected, f"rank {rank} {path} ({name})", example)


@pytest.mark.clause("variable.init")
@given(data=st.data())
def test_seeded_random_initializers_give_the_single_process_value(kdist, data):
    """The same initializer, seed and global shape draw the same numbers: exact."""
    example, names, observations = initialized(kdist, data, seeded=True)
    expected = keras_programs.single_process_values(example)
    for rank, path, name, value in values_by(observations, names, random=True):
        oracles.assert_identical(value, expected[path], f"rank {rank} {path} ({name}, seed {example.seed})", example)


@pytest.mark.clause("variable.init")
@given(data=st.data())
def test_random_initializers_stay_within_their_global_bounds(kdist, data):
    example, names, observations = initialized(kdist, data)
    for rank, path, name, value in values_by(observations, names, random=True):
        bound = initializers.float32_bound(name, value.shape)
        assert bool((value.abs() <= bound).all()), oracles.describe_mismatch(
            f"rank {rank} {path} ({name}, global shape {tuple(value.shape)})", f"every |value| <= {bound.item()!r}",
            value, example)
