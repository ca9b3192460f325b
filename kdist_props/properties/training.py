"""Rank-side body of the training clauses: `train.equivalence` and `optimizer.iterations`."""

from dataclasses import replace

from kdist_props.contract import training
from kdist_props.properties.tier_b import built_model, plain
from kdist_props.contract.specs import IterationsObservation, TrainExample, TrainObservation


def train(ctx, example: TrainExample) -> TrainObservation:
    """k steps of this rank's batch through the entry point; every variable read before and after."""
    spec = example.train
    model = built_model(ctx, spec.model, spec.distribution)
    x, y = training.rank_batch(spec, ctx.rank)
    initial = variable_values(ctx, model)
    # Steps before the freeze, then the layers are frozen, then the rest (as a
    # user does: fit, set trainable, compile and fit again).
    losses = list(ctx.target.train(model, replace(spec, steps=spec.freeze_after), x, y)) if spec.freeze_after else []
    if spec.frozen:
        ctx.target.freeze_layers(model, spec.frozen)
    losses += ctx.target.train(model, replace(spec, steps=spec.steps - spec.freeze_after), x, y)
    return TrainObservation(
        losses=tuple(float(loss) for loss in losses),
        initial=initial,
        final=variable_values(ctx, model),
        iterations=iterations_facts(ctx.target.iterations(model)),
    )


def variable_values(ctx, model):
    return tuple((path, plain(ctx.target.read(model, variable, "convert_to_numpy")))
                 for path, variable in ctx.target.model_variables(model))


def iterations_facts(iterations):
    """A Keras variable or a tensor: its dtype, shape and trainable flag as the user reads them."""
    value = plain(iterations)
    return IterationsObservation(
        dtype=str(getattr(iterations, "dtype", type(iterations).__name__)).removeprefix("torch."),
        shape=tuple(getattr(iterations, "shape", ())),
        trainable=bool(getattr(iterations, "trainable", getattr(iterations, "requires_grad", False))),
        value=int(value.item()) if value.numel() == 1 else None,
    )
