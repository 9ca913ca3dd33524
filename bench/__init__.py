"""Benchmarks: `make bench` (python -m bench). Figures are printed as ratios against a
baseline measured in the same run, next to the issue's target."""
