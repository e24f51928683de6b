"""Indicators, their registry and one-call pipeline, signals and regime labels (each kernel with
its NumPy reference)."""
