"""Benchmark suite of hother-cancelable (``make bench`` / ``python -m bench``).

Cases: a. enter+exit overhead, b. cancellation latency, c. scale (many live operations, many
timeouts firing), d. registry cost, e. streams, f. a realistic ~1 ms operation. Each case runs
its contenders side by side in one process and reports medians and ratios; the run rewrites
``docs/performance.md`` and its chart (see ``bench/__main__.py``).
"""
