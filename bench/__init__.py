"""Benchmarks: engines compared on one machine, with the command that produced each table."""
