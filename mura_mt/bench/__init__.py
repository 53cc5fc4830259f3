"""Measurements behind ``scripts/benchmark.py``: training, inference and serving blocks. Nothing imports these
but the benchmark script and its tests."""
