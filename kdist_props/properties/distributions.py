"""Rank-side bodies of layoutmap.values and distribution.defaults: LayoutMaps and
distributions built as users build them, through the target's public constructors."""

import keras
import numpy as np

from kdist_props.properties.build import keras_mesh
from kdist_props.contract.specs import (
    DefaultsExample,
    DefaultsObservation,
    DistributionFacts,
    LayoutMapExample,
    LayoutMapObservation,
)
from kdist_props.contract.values import tensor_from


def layout_map_value(entry, mesh):
    """The entry's axes in the form a user wrote them."""
    if entry.form == "TensorLayout":
        return keras.distribution.TensorLayout(list(entry.axes), mesh)
    return tuple(entry.axes) if entry.form == "tuple" else list(entry.axes)


def layout_map_variable(ctx, ex: LayoutMapExample) -> LayoutMapObservation:
    """layoutmap.values: a variable made under ModelParallel(layout_map=...): its layout, or what was raised."""
    mesh = keras_mesh(ctx, ex.mesh)
    entries = [(entry.key, layout_map_value(entry, mesh)) for entry in ex.entries]
    try:
        distribution = ctx.target.layout_map_distribution(mesh, entries, ex.mesh.axis_names[0])
        variable = ctx.target.make_variable(distribution, mesh, ex.variable, tensor_from(ex.initial))
    except (ValueError, IndexError) as error:
        # The clause names the right error (ValueError) and a known wrong one
        # (IndexError): observations. Anything else fails the example as raised.
        return LayoutMapObservation(error_type=type(error).__name__, error=str(error))
    axes, _, local = ctx.target.variable_layout_of(variable)
    return LayoutMapObservation(axes=tuple(axes), local=local.detach().cpu())


def facts(distribution):
    mesh = distribution.device_mesh
    return DistributionFacts(tuple(mesh.shape), tuple(mesh.axis_names),
                             tuple(np.asarray(mesh.devices).flatten().tolist()), distribution.batch_dim_name)


def defaults(ctx, ex: DefaultsExample) -> DefaultsObservation:
    """distribution.defaults: list_devices(), DataParallel() and ModelParallel(layout_map=..., batch_dim_name=...)."""
    mesh = keras_mesh(ctx, ex.mesh)
    return DefaultsObservation(
        devices=tuple(ctx.target.list_devices()),
        data_parallel=facts(ctx.target.default_data_parallel()),
        model_parallel=facts(ctx.target.layout_map_distribution(mesh, [], ex.batch_dim_name)),
    )
