"""Chapter metrics (Tier B): `eval.count-metrics`.

evaluate with TruePositives under ModelParallel on every (batch, model) mesh,
each rank feeding the slice of its batch position. The oracle is Keras itself
with no distribution: the same program on the global batch, run here in the
driver. A count is exact; evaluate's logs hold Python floats, as Keras'
logs do without a distribution."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdist_props.contract import keras_programs, metrics, oracles
from kdist_props.properties import metrics as bodies
from kdist_props.strategies.metrics import count_metric_examples

PYTHON_FLOAT = f"{float.__module__}.{float.__qualname__}"  # builtins.float


@pytest.mark.clause("eval.count-metrics")
@pytest.mark.parametrize("units_sharded", (False, True), ids=("replicated-prediction", "sharded-prediction"))
@given(data=st.data())
def test_evaluate_counts_the_global_batch_once(kdist, units_sharded, data):
    """One test per kind of kernel layout: a prediction sharded on its units
    dim is a failure of its own, which must not hide the count."""
    example = data.draw(count_metric_examples(kdist.world_size, units_sharded), label="evaluation")
    expected = keras_programs.single_process_true_positives(example.features, *metrics.global_batch(example))
    for rank, got in enumerate(kdist.run(bodies.true_positives, example)):
        assert got.true_positives == expected, oracles.describe_mismatch(
            f"rank {rank} TruePositives reported by evaluate", expected, got.true_positives, example)


@pytest.mark.clause("eval.count-metrics")
@given(data=st.data())
def test_evaluate_logs_python_floats(kdist, data):
    example = data.draw(count_metric_examples(kdist.world_size, units_sharded=False), label="evaluation")
    for rank, got in enumerate(kdist.run(bodies.true_positives, example)):
        assert got.logged_type == PYTHON_FLOAT, (f"rank {rank}: expected evaluate's logs to hold a {PYTHON_FLOAT}, "
                                                 f"got a {got.logged_type}, for {example!r}")
