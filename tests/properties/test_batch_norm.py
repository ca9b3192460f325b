"""Chapter batch normalization (Tier B): `train.batch-norm`.

One fit step of Input -> BatchNormalization -> Dense(1) under DataParallel,
each rank feeding its slice. The oracle is Keras itself with no distribution:
the same program on the global batch, run here in the driver. Ranks agreeing
and the value being right are separate facts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import batch_norm, keras_programs, oracles
from kdist_props.properties import batch_norm as bodies
from kdist_props.strategies.batch_norm import batch_norm_examples

STATISTICS = ("moving_mean", "moving_variance")


def stepped(kdist, data):
    example = data.draw(batch_norm_examples(kdist.world_size), label="batch-norm step")
    return example, kdist.run(bodies.moving_statistics, example)


@pytest.mark.clause("train.batch-norm")
@given(data=st.data())
def test_every_rank_holds_the_same_moving_statistics(kdist, data):
    """Replicated state, read on every rank: bit for bit."""
    example, observations = stepped(kdist, data)
    for rank, got in enumerate(observations[1:], start=1):
        for name in STATISTICS:
            oracles.assert_identical(getattr(got, name), getattr(observations[0], name),
                                     f"rank {rank} vs rank 0 {name}", example)


@pytest.mark.clause("train.batch-norm")
@given(data=st.data())
def test_moving_statistics_are_those_of_the_global_batch(kdist, data):
    example, observations = stepped(kdist, data)
    expected = dict(zip(STATISTICS, keras_programs.single_process_batch_norm(*batch_norm.global_batch(example))))
    errors = {"moving_mean": batch_norm.mean_error(example, expected["moving_mean"]),
              "moving_variance": batch_norm.variance_error(example, expected["moving_variance"])}
    for rank, got in enumerate(observations):
        for name in STATISTICS:
            assert batch_norm.admits(getattr(got, name), expected[name], errors[name]), oracles.describe_mismatch(
                f"rank {rank} {name} (within {errors[name].max().item():.3g})", expected[name], getattr(got, name),
                example)
