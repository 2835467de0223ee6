"""Benchmarks: measured side by side with a baseline, reported as ratios (see bench/README.md)."""
