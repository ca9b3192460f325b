"""Hypothesis strategies (installed as kdist_props.strategies)."""
