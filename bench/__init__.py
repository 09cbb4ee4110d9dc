"""Benchmark harness for trioserve (not part of the package); see bench/README.md."""
