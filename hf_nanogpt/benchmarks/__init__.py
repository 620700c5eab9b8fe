"""Benchmark implementations behind `scripts/bench.py` (one module per benchmark, each with `main(argv)`)."""
