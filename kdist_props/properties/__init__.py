"""Rank-side bodies: `body(ctx, example) -> observation`.

They build inputs from plain example data, call the target and return plain,
picklable observations. They know nothing of Hypothesis or of the oracles.
"""
