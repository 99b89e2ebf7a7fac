"""Benchmarks (`make bench` / `python -m bench`): one module per area, each with `run(options)`."""
