"""Evaluations with a count metric under ModelParallel (eval.count-metrics)."""

from hypothesis import strategies as st

from kdist_props.contract.specs import MODEL_PARALLEL, CountMetricExample, ModelSpec
from kdist_props.strategies.models import model_distributions
from kdist_props.strategies.tensors import seeds


@st.composite
def count_metric_examples(draw, world_size, units_sharded):
    """ModelParallel on every (batch, model) factorisation; the count model's
    kernel and bias sharded on the model axis or replicated. units_sharded:
    the units dim of the kernel or the bias (so the prediction) is sharded,
    else never."""
    features = draw(st.integers(1, 4), label="features")
    model = ModelSpec(widths=(features, 1), biases=(True,), activations=("sigmoid",))
    distributions = model_distributions(world_size, model, MODEL_PARALLEL).filter(
        lambda d: (dict(d.layout_map)[".*d0/kernel"][1] is not None or dict(d.layout_map)[".*d0/bias"][0]
                   is not None) == units_sharded)
    distribution = draw(distributions, label="distribution")
    per_slice = draw(st.integers(1, 4), label="per-slice batch")
    return CountMetricExample(
        features=features,
        global_batch=per_slice * distribution.mesh.axis_size(distribution.batch_dim_name),
        distribution=distribution,
        data_seed=draw(seeds, label="data seed"),
    )
