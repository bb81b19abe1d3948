"""Utilities: thread bridge, context propagation, cancellable streams, decorators, logging.

Nothing is re-exported here; import from the concrete modules
(``hother.cancelable.utils.decorators``, ``hother.cancelable.utils.streams``, ...).
"""
