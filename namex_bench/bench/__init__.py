"""Benchmarks (``namex-bench bench …``): speed measured side by side in one process."""
