"""Benchmarks: scripts printing speed ratios measured side by side in one run (each exposes main(argv=None))."""
