"""Timing benchmarks: each compares a toolkit stage with a straightforward reference in one process."""
