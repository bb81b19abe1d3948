"""Core of hother.cancelable: models, exceptions, tokens, the Cancellable and the registry.

Nothing is re-exported here; import from the concrete modules (``core.models``, ...).
"""
