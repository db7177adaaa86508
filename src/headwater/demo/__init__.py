"""Realistic simulated traffic from six product teams, for the demo, tests and benchmarks."""
