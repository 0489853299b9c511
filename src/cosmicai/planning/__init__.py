"""Estimating a run before it happens: calibrated speeds and the plan per backend."""
