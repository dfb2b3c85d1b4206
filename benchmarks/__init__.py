"""Benchmarks: `python -m benchmarks [name ...]` prints measured figures against targets."""
