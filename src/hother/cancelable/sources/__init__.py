"""Cancellation sources: what can cancel an operation besides an explicit ``cancel()``.

* :class:`~.timeout.TimeoutSource` — a deadline;
* :class:`~.condition.ConditionSource` / :class:`~.condition.ResourceConditionSource` — a
  predicate polled at an interval;
* :class:`~.signal.SignalSource` — process signals (SIGINT, SIGTERM, ...);
* :class:`~.composite.AnyOfSource` (``CompositeSource``) / :class:`~.composite.AllOfSource` —
  combinations;
* :class:`~.base.CancellationSource` — the base class for custom sources
  (see ``docs/custom_sources.md``).

The concrete modules remain the canonical import locations (as in 0.1); the names are
also re-exported here for convenience.
"""

from .base import CancellationSource
from .composite import AllOfSource, AnyOfSource, CompositeSource
from .condition import ConditionSource, ResourceConditionSource
from .signal import SignalSource
from .timeout import TimeoutSource

__all__ = [
    "AllOfSource",
    "AnyOfSource",
    "CancellationSource",
    "CompositeSource",
    "ConditionSource",
    "ResourceConditionSource",
    "SignalSource",
    "TimeoutSource",
]
