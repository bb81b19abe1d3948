"""Tests of the C binding ``hother.cancelable._engine`` (error paths, GC, allocation failures)."""
