"""Benchmark: label sources on 1,000,000 bars (goal: triple barrier at most 2 s).

Run with ``python -m bench.bench_labels`` (``--quick`` for fewer repeats, ``--no-write`` to
only print). The same seeded random-walk bars as the features benchmark. Triple barrier is
vectorized over bars (one numpy pass per holding offset over the trades still open); CUSUM
and the zigzags are recursions and loop once per bar over Python floats. Writes its own
section of ``docs/benchmarks.md``, replacing an older run of this benchmark and nothing else.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from bench.bench_features import synthetic_bars
from bench.docs import parse_args, publish
from pipeline.labels import SOURCES, LabelResult

N_BARS = 1_000_000
GOAL_S = 2.0
HEADING = "## Labels (1,000,000 bars)"

CASES: dict[str, tuple[str, dict]] = {
    "triple_barrier, defaults (H 50, atr vol span 50)": ("triple_barrier", {}),
    "triple_barrier + CUSUM (auto) + compute_weights": (
        "triple_barrier", {"cusum_threshold": 0, "compute_weights": True}),
    "triple_barrier, vol_method close": ("triple_barrier", {"vol_method": "close"}),
    "zigzag 1 %": ("zigzag", {"zigzag_threshold": 0.01}),
    "forward_return h 20": ("forward_return", {}),
    "context h 5": ("context", {}),
    "regime, defaults": ("regime", {}),
}


def timed(call: Callable[[], LabelResult], runs: int) -> tuple[float, float, float, int]:
    """(cold, best, median) seconds of one cold call then ``runs`` warm ones; labelled bars."""
    times, result = [], None
    for _ in range(runs + 1):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    cold, *warm = times
    return cold, min(warm), statistics.median(warm), int(result.valid.sum())


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    args = parse_args(__doc__)
    runs = 1 if args.quick else 5
    bars: pd.DataFrame = synthetic_bars(N_BARS)
    rows = []
    for title, (name, params) in CASES.items():
        source = SOURCES[name]
        config = {**source.defaults, **params}
        before = load()
        cold, best, median, labelled = timed(lambda s=source, c=config: s.label(bars, c), runs)
        goal = f"{GOAL_S}" if title.startswith("triple_barrier, defaults") else ""
        met = ("yes" if best <= GOAL_S else "NO") if goal else ""
        rows.append(f"| {title} | {labelled:,} | {best:.3f} | {median:.3f} | {cold:.3f} | "
                    f"{goal} | {met} | {before} -> {load()} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        HEADING,
        "",
        f"`python -m bench.bench_labels`: {N_BARS:,} seeded random-walk hourly bars (as the "
        "features benchmark); each label source with KTRDR's defaults unless named; best and "
        f"median of {runs} warm runs after one cold first call. Triple barrier loops over the "
        "50 holding offsets, each a numpy pass over the trades still open; CUSUM and the "
        "zigzags (zigzag, regime's two) are recursions: one Python step per bar over a list "
        "of floats.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}; "
        "load = 1/5/15-minute load averages before -> after (a shared machine).",
        "",
        "| labelling | labelled bars | best (s) | median (s) | cold first call (s) | goal (s) "
        "| met | load |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    publish(HEADING, text, args)


if __name__ == "__main__":
    main()
