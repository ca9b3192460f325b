"""What a run leaves: the capability report (report.py), known failures per
Keras version (baselines.py), regressions between two reports (compare.py)
and standalone repro scripts (repro.py)."""
