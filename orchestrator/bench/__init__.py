"""Benchmarks: each prints a table beside a baseline measured in the same run, and has a
smoke mode the test suite runs so a changed signature fails CI, not the next measurement."""
