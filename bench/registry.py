"""d. Registry cost with 0, 10k and 100k live operations (``OperationRegistry`` sync methods).

For each size the registry is filled with that many operations, then batches of fresh
operations are registered, looked up and unregistered (each step timed on its own; the median
of the per-call time over the rounds is reported). A plain ``dict`` doing set/get/pop at the
same sizes shows what "flat" looks like on this machine (cache effects included).
"""

from __future__ import annotations

from typing import Any

from ._common import Settings, median, no_gc, pc

STEPS: tuple[str, ...] = ("register_sync", "get_operation_sync", "unregister_sync")


def run(settings: Settings) -> dict[str, Any]:
    """``{"sizes": [...], "ours": {size: {step: ns}}, "dict": {size: {step: ns}}}``."""
    from hother.cancelable import Cancellable, OperationRegistry

    OperationRegistry._instance = None  # a registry of our own (the singleton is recreated)
    reg = OperationRegistry.get_instance()
    reg.clear_all_sync()
    batch_n = settings.registry_batch

    def fresh(k: int) -> list[Any]:
        ops = [Cancellable(name="bench") for _ in range(k)]
        for op in ops:
            _ = op.context  # build the (lazy) context outside the timed region
        return ops

    ours: dict[int, dict[str, float]] = {}
    plain: dict[int, dict[str, float]] = {}
    live: list[Any] = []
    for size in sorted(settings.registry_sizes):
        add = fresh(size - len(live))
        for op in add:
            reg.register_sync(op)
        live.extend(add)
        d: dict[str, Any] = {op.context.id: op for op in live}
        times: dict[str, list[float]] = {s: [] for s in STEPS}
        dtimes: dict[str, list[float]] = {s: [] for s in STEPS}
        for round_no in range(settings.registry_rounds + 1):  # round 0 = warm-up
            batch = fresh(batch_n)
            ids = [op.context.id for op in batch]
            with no_gc():
                t0 = pc()
                for op in batch:
                    reg.register_sync(op)
                t1 = pc()
                for op_id in ids:
                    reg.get_operation_sync(op_id)
                t2 = pc()
                for op_id in ids:
                    reg.unregister_sync(op_id)
                t3 = pc()
                for op_id, op in zip(ids, batch, strict=True):
                    d[op_id] = op
                t4 = pc()
                for op_id in ids:
                    d.get(op_id)
                t5 = pc()
                for op_id in ids:
                    d.pop(op_id, None)
                t6 = pc()
            if round_no == 0:
                continue
            for step, dt in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[step].append(dt / batch_n)
            for step, dt in zip(STEPS, (t4 - t3, t5 - t4, t6 - t5), strict=True):
                dtimes[step].append(dt / batch_n)
        ours[size] = {s: median(v) for s, v in times.items()}
        plain[size] = {s: median(v) for s, v in dtimes.items()}
    reg.clear_all_sync()
    OperationRegistry._instance = None
    sizes = sorted(settings.registry_sizes)
    return {"sizes": sizes, "ours": ours, "dict": plain}
