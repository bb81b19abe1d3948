"""End-to-end scenarios with real parts (plan 7.4): HTTP over a real socket, a multi-stage
pipeline with mixed sources, a parent/child hierarchy, and a subprocess service shut down by
SIGTERM. See ``docs/errors.md`` (Faults) for the outcomes they pin down."""
