"""Reliability tests: leaks, thread hammer, bad input, engine fuzzing, faults (plan 7.2).

The workloads and the measuring helpers live in :mod:`reliability.workloads`; the long
versions are run by ``scripts/soak.py`` (``make soak``).
"""
