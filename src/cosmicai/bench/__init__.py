"""Benchmarks: the CAI method against this project's engines, and pipeline scaling."""
