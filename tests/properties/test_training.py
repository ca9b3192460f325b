"""Chapter training (Tier B): `train.equivalence` and `optimizer.iterations`."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdist_props import oracles, training
from kdist_props.properties import training as bodies
from kdist_props.strategies.models import train_specs


@pytest.mark.clause("train.equivalence")
@given(data=st.data())
def test_k_steps_match_single_process_training_on_the_global_batch(kdist, data):
    spec = data.draw(train_specs(kdist.world_size), label="training")
    example = {"train": spec}
    losses, weights = training.train(spec)
    rtol, atol = training.training_tolerance(spec)
    initial = training.initial_weights(spec.model)
    observations = kdist.run(bodies.train, example)
    for rank, got in enumerate(observations):
        assert torch.allclose(torch.tensor(got["losses"]), torch.tensor(losses), rtol=rtol, atol=atol), \
            oracles.describe_mismatch(f"rank {rank} losses", losses, got["losses"], example)
        for path, expected in weights.items():
            actual = got["final"][path]
            assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), \
                oracles.describe_mismatch(f"rank {rank} {path} after {spec.steps} steps", expected, actual, example)
            if not torch.equal(expected, initial[path]):  # gradient flow: it must have moved
                assert not torch.equal(actual, initial[path]), oracles.describe_mismatch(
                    f"rank {rank} {path}", "a changed value (it has a gradient)", "its initial value", example)
    for path in weights:  # replicated or not, every rank ends with the same full value
        for rank, got in enumerate(observations[1:], start=1):
            oracles.assert_identical(got["final"][path], observations[0]["final"][path],
                                     f"rank {rank} vs rank 0 {path}", example)


@pytest.mark.clause("optimizer.iterations")
@given(data=st.data())
def test_iterations_is_an_int_scalar_counting_steps(kdist, data):
    spec = data.draw(train_specs(kdist.world_size), label="training")
    example = {"train": spec}
    for rank, got in enumerate(kdist.run(bodies.train, example)):
        iterations = got["iterations"]
        assert iterations["dtype"].startswith(("int", "uint")), oracles.describe_mismatch(
            f"rank {rank} iterations dtype", "an integer dtype", iterations["dtype"], example)
        assert iterations["shape"] == (), oracles.describe_mismatch(
            f"rank {rank} iterations shape", (), iterations["shape"], example)
        assert not iterations["trainable"], oracles.describe_mismatch(
            f"rank {rank} iterations trainable", False, True, example)
        assert iterations["value"] == spec.steps, oracles.describe_mismatch(
            f"rank {rank} iterations after {spec.steps} steps", spec.steps, iterations["value"], example)
