"""Dense stacks whose variables get Keras' own initializers (variable.init)."""

from hypothesis import strategies as st

from kdist_props.contract.initializers import DETERMINISTIC, KERNEL_ONLY, RANDOM
from kdist_props.contract.specs import DATA_PARALLEL, MODEL_PARALLEL, InitExample
from kdist_props.strategies.models import model_distributions, model_specs
from kdist_props.strategies.tensors import seeds

# Deterministic first: examples shrink to them.
INITIALIZERS = (*DETERMINISTIC, *RANDOM)


@st.composite
def init_examples(draw, world_size, seeded=False):
    """A model, an initializer per variable, a distribution (ModelParallel
    layouts leave some variables replicated) and the seed every rank sets,
    or none (unless `seeded`): users who never seed still expect replicas that agree."""
    model = draw(model_specs(), label="model")
    # ModelParallel on every (batch, model) mesh; DataParallel on the 1-D mesh
    # only: multi-axis DataParallel has a test of its own (train.equivalence),
    # and a Keras that cannot build it must still get a verdict on initializers.
    distributions = st.one_of(model_distributions(world_size, model, DATA_PARALLEL, every_factorisation=False),
                              model_distributions(world_size, model, MODEL_PARALLEL))
    names = []
    for path, shape in model.variable_shapes():
        allowed = [name for name in INITIALIZERS if len(shape) == 2 or name not in KERNEL_ONLY]
        names.append(draw(st.sampled_from(allowed), label=f"{path} initializer"))
    return InitExample(
        model=model,
        initializers=tuple(names),
        distribution=draw(distributions, label="distribution"),
        seed=draw(seeds if seeded else st.one_of(seeds, st.none()), label="random seed"),
        process_entropy=draw(seeds, label="process entropy"),
    )
