"""Rank-side bodies of the training clauses: `train.equivalence` and `optimizer.iterations`."""

from kdist_props import training
from kdist_props.properties.tier_b import built_model, plain


def train(ctx, ex):
    """train.equivalence and optimizer.iterations: k steps on this rank's batch."""
    spec = ex["train"]
    model = built_model(ctx, spec.model, spec.distribution)
    initial = {path: plain(ctx.target.read(model, v, "convert_to_numpy")) for path, v in
               ctx.target.model_variables(model)}
    x, y = training.rank_batch(spec, ctx.rank, ctx.world_size)
    losses = ctx.target.train(model, spec, x, y)
    iterations = ctx.target.iterations(model)
    iterations_value = plain(iterations)
    final = {path: plain(ctx.target.read(model, v, "convert_to_numpy")) for path, v in
             ctx.target.model_variables(model)}
    return {
        "losses": [float(loss) for loss in losses],
        "initial": initial,
        "final": final,
        "iterations": {
            "dtype": str(getattr(iterations, "dtype", type(iterations).__name__)).removeprefix("torch."),
            "shape": tuple(getattr(iterations, "shape", ())),
            "trainable": bool(getattr(iterations, "trainable", getattr(iterations, "requires_grad", False))),
            "value": int(iterations_value.item()) if iterations_value.numel() == 1 else None,
        },
    }
