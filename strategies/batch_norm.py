"""BatchNormalization steps under DataParallel (train.batch-norm)."""

from hypothesis import strategies as st

from kdist_props.contract.specs import DATA_PARALLEL, BatchNormExample
from kdist_props.strategies.models import model_distributions
from kdist_props.strategies.tensors import seeds


@st.composite
def batch_norm_examples(draw, world_size):
    """DataParallel on the 1-D (world,) mesh: multi-axis DataParallel has a
    test of its own (train.equivalence), and a Keras that cannot build it
    must still get a verdict here. DataParallel lays out no variable: no model spec."""
    distribution = draw(model_distributions(world_size, None, DATA_PARALLEL, every_factorisation=False),
                        label="distribution")
    per_slice = draw(st.integers(1, 3), label="per-slice batch")
    return BatchNormExample(
        features=draw(st.integers(1, 4), label="features"),
        global_batch=per_slice * distribution.mesh.axis_size(distribution.batch_dim_name),
        distribution=distribution,
        data_seed=draw(seeds, label="data seed"),
    )
