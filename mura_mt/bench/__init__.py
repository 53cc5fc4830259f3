"""Measurements behind ``scripts/benchmark.py``: training, inference, runtimes, serving, DICOM and worklist blocks,
and the launchers of the real servers they (and the tests) start. May import anything in the package; nothing in
the library or the other scripts imports it.
"""
