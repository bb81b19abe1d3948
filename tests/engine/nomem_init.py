"""Allocation-failure sweep of the engine's module initialisation (run by test_nomem.py).

Usage: ``python nomem_init.py MODE`` (``full`` or ``sample``); prints one JSON object.

This process never imports the engine itself: each attempt forks a child that makes the n-th
allocation fail (``_testcapi.set_nomemory(n, n + 1)``) while ``PyInit__engine`` runs (through
``_imp.create_dynamic``, a fresh load in every child), then reports how the import ended. The
sweep ends after ``STOP_AFTER_OK`` consecutive successful imports. Children leave through the
C library's ``exit()``; see nomem_sweep.py.

Outcomes: ``memory`` (MemoryError), ``ok``, ``capsule`` (the datetime C API import turns the
MemoryError into an ImportError: CPython's PyCapsule_Import), ``lost`` (SystemError: the
initialisation failed but the MemoryError was lost on the way), ``other`` (anything else),
``crash`` (the child died).
"""

from __future__ import annotations

import _imp
import _testcapi
import asyncio
import asyncio.base_events
import asyncio.events
import asyncio.tasks
import ctypes
import datetime
import importlib.util
import json
import os
import sys

STOP_AFTER_OK = 12
MAX_INDEX = 3000


def attempt(spec: object, n: int) -> tuple[str, str]:
    _testcapi.set_nomemory(n, n + 1)
    try:
        _imp.create_dynamic(spec)
    except MemoryError:
        _testcapi.remove_mem_hooks()
        return "memory", ""
    except ImportError as exc:
        _testcapi.remove_mem_hooks()
        if "PyCapsule_Import" in str(exc):
            return "capsule", str(exc)
        return "other", repr(exc)
    except SystemError as exc:
        _testcapi.remove_mem_hooks()
        return "lost", str(exc)
    except BaseException as exc:
        _testcapi.remove_mem_hooks()
        return "other", repr(exc)
    _testcapi.remove_mem_hooks()
    return "ok", ""


def main() -> None:
    stride = 1 if sys.argv[1] == "full" else 7
    spec = importlib.util.spec_from_file_location(
        "hother.cancelable._engine", os.environ["HOTHER_ENGINE_SO"]
    )
    assert datetime and asyncio.base_events and asyncio.events and asyncio.tasks
    libc = ctypes.CDLL(None)
    if sys.argv[1] == "one":  # debugging: one attempt in this process (H16_TRAP: stop first)
        if os.environ.get("H16_TRAP"):
            os.kill(os.getpid(), 5)
        print(attempt(spec, int(sys.argv[2])))
        return
    counts: dict[str, int] = {}
    details: dict[str, list[str]] = {}
    streak = n = 0
    while n < MAX_INDEX and streak < STOP_AFTER_OK:
        r, w = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, json.dumps(attempt(spec, n)).encode())
            os.close(w)
            libc.exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) or not data:
            kind, detail = "crash", f"status {status}"
        else:
            kind, detail = json.loads(data)
        counts[kind] = counts.get(kind, 0) + 1
        if kind != "ok" and kind != "memory":
            details.setdefault(kind, []).append(f"n={n}: {detail}")
        streak = streak + 1 if kind == "ok" else 0
        n += stride
    print(json.dumps({"last_index": n, "counts": counts, "details": details}))


if __name__ == "__main__":
    main()
