"""Differential parity fuzzing: the same generated program on our engine, anyio and trio.

* :mod:`.program`: the program model (ops as plain tuples), a readable rendering, and the
  hypothesis strategy generating race-free programs;
* :mod:`.executors`: the interpreter and the three executors (our asyncio engine with
  ``AsyncioTaskGroup``, ``anyio`` on asyncio, trio), all on virtual time;
* ``test_parity_fuzz.py``: the hypothesis property (``HYPOTHESIS_PROFILE=fuzz`` or
  ``PARITY_EXAMPLES=N`` for long runs, see ``scripts/fuzz.sh``).
"""
