"""``python -m bench``: run the benchmark suite, print the tables, regenerate the docs.

Usage::

    python -m bench                 # everything; rewrites docs/performance.md + docs/img/
    python -m bench --only a,b      # some cases (a overhead, b latency, c scale, d registry,
                                    # e streams, f realistic); docs are not rewritten
    python -m bench --quick         # tiny sizes: a smoke run of every code path (no docs)
    python -m bench --json out.json # also dump the raw results
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from . import latency, overhead, realistic, registry, report, scale, streams
from ._common import ROOT, Settings, machine_info

CASES: dict[str, tuple[str, Callable[[Settings], dict[str, Any]]]] = {
    "a": ("overhead", overhead.run),
    "b": ("latency", latency.run),
    "c": ("scale", scale.run),
    "d": ("registry", registry.run),
    "e": ("streams", streams.run),
    "f": ("realistic", realistic.run),
}
DOC = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "img" / "performance.png"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run), no docs")
    ap.add_argument("--only", default="", help="comma-separated cases among a,b,c,d,e,f")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument("--json", default="", help="write the raw results to this file")
    args = ap.parse_args(argv)
    selected = [c.strip() for c in args.only.split(",") if c.strip()] or list(CASES)
    unknown = [c for c in selected if c not in CASES]
    if unknown:
        ap.error(f"--only: unknown case(s) {unknown}; choose among {','.join(CASES)}")
    write_docs = not (args.no_docs or args.quick or args.only)

    settings = Settings.make(args.quick)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": _load(),
        "settings": "quick" if args.quick else "full",
    }
    t_start = time.perf_counter()
    for case in selected:
        key, fn = CASES[case]
        t0 = time.perf_counter()
        print(f"[bench] {case}. {key} ...", file=sys.stderr, flush=True)
        results[key] = fn(settings)
        print(f"[bench] {case}. {key}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if "overhead" in results:  # where the time goes, for each missed enter+exit target
        profiles = []
        for target in report.targets(results):
            loop = next((lp for lp in overhead.LOOPS if f"({lp})" in target.name), None)
            if target.name.startswith("enter+exit") and loop is not None and not target.passed:
                profiles.append(overhead.profile_with_timeout(loop, n=500 if args.quick else 5000))
        if profiles:
            results["profile"] = "\n\n".join(profiles)
    results["elapsed_s"] = time.perf_counter() - t_start
    results["load_end"] = _load()

    print(report.text_report(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, default=str)
    if write_docs:
        has_chart = report.chart(results, CHART)
        rel = os.path.relpath(CHART, DOC.parent) if has_chart else None
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(report.markdown(results, rel), encoding="utf-8")
        print(
            f"\n[bench] wrote {DOC.relative_to(ROOT)}"
            + (f" and {CHART.relative_to(ROOT)}" if has_chart else ""),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
