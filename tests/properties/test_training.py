"""Chapter training (Tier B): `train.equivalence` and `optimizer.iterations`.

Each test checks one fact, so that one bug cannot hide another: the loss the
entry point reports, the final weights, agreement between replicas, and that
every variable gets a gradient are separate tests, each run through `fit` and
through `train_on_batch`, under DataParallel and under ModelParallel (a target
whose ModelParallel training crashes must still show whether its
DataParallel training is right). The oracle (training.train) gives every expected
number with its float32 error bound; a value is wrong only outside it.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdist_props.contract import oracles, training
from kdist_props.properties import training as bodies
from kdist_props.contract.specs import DATA_PARALLEL, MODEL_PARALLEL, TrainExample
from kdist_props.strategies.models import ENTRIES, train_specs


# A train.equivalence test runs once per (entry point, distribution); each gets
# half the profile's examples, so that every distribution gets the examples it
# got when it was drawn, and the clause costs what it did.
PER_DISTRIBUTION = settings(settings.default, max_examples=max(1, settings.default.max_examples // 2))
each_run = pytest.mark.parametrize("entry, kind", [(e, k) for e in ENTRIES for k in (DATA_PARALLEL, MODEL_PARALLEL)])


def trained(kdist, data, entry=None, kind=None, every_factorisation=False, freeze=None, decay=True):
    """(example, what the oracle expects, observations by rank) of one drawn
    training run. Most tests keep to the meshes of (world,) DataParallel and
    (1, world) ModelParallel, so that each fact keeps its own verdict on a
    Keras that breaks other meshes (3.15.1: see its baseline);
    test_final_weights_on_every_mesh_factorisation draws the rest."""
    spec = train_specs(kdist.world_size, entry, kind, every_factorisation, freeze, decay)
    example = TrainExample(train=data.draw(spec, label="training"))
    return example, training.train(example.train), kdist.run(bodies.train, example)


def bounded(expected):
    return f"{expected.value.tolist()} ± {expected.error.tolist()}"


@pytest.mark.clause("train.equivalence")
@each_run
@PER_DISTRIBUTION
@given(data=st.data())
def test_reported_loss_is_the_loss_on_the_global_batch(kdist, entry, kind, data):
    example, expected, observations = trained(kdist, data, entry, kind)
    for rank, got in enumerate(observations):
        assert len(got.losses) == len(expected.losses), oracles.describe_mismatch(
            f"rank {rank} number of losses", len(expected.losses), len(got.losses), example)
        for step, (loss, reported) in enumerate(zip(expected.losses, got.losses), start=1):
            assert loss.admits(torch.tensor(reported)), oracles.describe_mismatch(
                f"rank {rank} loss reported by {entry} at step {step}", bounded(loss), reported, example)


@pytest.mark.clause("train.equivalence")
@each_run
@PER_DISTRIBUTION
@given(data=st.data())
def test_final_weights_match_single_process_training(kdist, entry, kind, data):
    assert_final_weights(*trained(kdist, data, entry, kind))


@pytest.mark.clause("train.equivalence")
@pytest.mark.parametrize("kind", (DATA_PARALLEL, MODEL_PARALLEL))
@PER_DISTRIBUTION
@given(data=st.data())
def test_final_weights_on_every_mesh_factorisation(kdist, kind, data):
    """Meshes as users draw them: ModelParallel on every (batch, model)
    factorisation of the world size, DataParallel on 1-D and 2-axis meshes;
    every rank feeds the slice of its batch-axis position. One test per
    distribution, so that a DataParallel bug cannot hide a ModelParallel one."""
    assert_final_weights(*trained(kdist, data, "fit", kind, every_factorisation=True))


@pytest.mark.clause("train.equivalence")
@pytest.mark.parametrize("kind", (DATA_PARALLEL, MODEL_PARALLEL))
@pytest.mark.parametrize("frozen_once", ("built", "trained"))
@PER_DISTRIBUTION
@given(data=st.data())
def test_frozen_layers_keep_their_weights_and_the_others_train(kdist, frozen_once, kind, data):
    """`layer.trainable = False` on some layers of a built model, or of one
    trained for some SGD steps (then compiled again), then fit: from the
    freeze on, the frozen layers' variables keep their values exactly, the
    others train to the single-process weights of the same freeze."""
    assert_final_weights(*trained(kdist, data, "fit", kind, freeze=frozen_once))


def assert_final_weights(example, expected, observations):
    for rank, got in enumerate(observations):
        assert [path for path, _ in got.final] == list(expected.weights), oracles.describe_mismatch(
            f"rank {rank} variables", list(expected.weights), [path for path, _ in got.final], example)
        for path, weight in expected.weights.items():
            actual = got.final_value(path)
            assert actual.shape == weight.value.shape and bool(weight.admits(actual).all()), \
                oracles.describe_mismatch(f"rank {rank} {path} after {example.train.steps} steps",
                                          bounded(weight), actual.tolist(), example)


@pytest.mark.clause("train.equivalence")
@each_run
@PER_DISTRIBUTION
@given(data=st.data())
def test_every_rank_ends_with_the_same_weights(kdist, entry, kind, data):
    """Replicated or sharded, every rank reads the same full value: bit for bit, as it is moved, not computed."""
    example, _, observations = trained(kdist, data, entry, kind)
    for rank, got in enumerate(observations[1:], start=1):
        for path, value in observations[0].final:
            oracles.assert_identical(got.final_value(path), value, f"rank {rank} vs rank 0 {path}", example)


@pytest.mark.clause("train.equivalence")
@each_run
@PER_DISTRIBUTION
@given(data=st.data())
def test_every_variable_that_should_move_moves(kdist, entry, kind, data):
    """Gradient flow: a variable that single-process training surely moves (by
    more than its error bound) must not keep its initial value. No weight
    decay: it would move a variable that gets no gradient."""
    example, expected, observations = trained(kdist, data, entry, kind, decay=False)
    for rank, got in enumerate(observations):
        for path in expected.weights:
            if expected.surely_moved(path):
                assert not torch.equal(got.final_value(path), got.initial_value(path)), oracles.describe_mismatch(
                    f"rank {rank} {path} (it has a gradient)", "a changed value", "its initial value", example)


# One test per fact: a float counter and a counter of shape (1,) are different bugs.
ITERATIONS_FACTS = {
    "dtype": ("an integer dtype", lambda iterations: iterations.dtype.startswith(("int", "uint"))),
    "shape": ((), lambda iterations: iterations.shape == ()),
    "trainable": (False, lambda iterations: not iterations.trainable),
}


@pytest.mark.clause("optimizer.iterations")
@pytest.mark.parametrize("fact", ITERATIONS_FACTS)
@given(data=st.data())
def test_iterations_is_an_int_scalar_and_not_trainable(kdist, fact, data):
    example, _, observations = trained(kdist, data)
    wanted, holds = ITERATIONS_FACTS[fact]
    for rank, got in enumerate(observations):
        assert holds(got.iterations), oracles.describe_mismatch(
            f"rank {rank} iterations {fact}", wanted, getattr(got.iterations, fact), example)


@pytest.mark.clause("optimizer.iterations")
@given(data=st.data())
def test_iterations_counts_the_steps_on_every_rank(kdist, data):
    example, _, observations = trained(kdist, data)
    for rank, got in enumerate(observations):
        assert got.iterations.value == example.train.steps, oracles.describe_mismatch(
            f"rank {rank} iterations after {example.train.steps} steps", example.train.steps,
            got.iterations.value, example)
