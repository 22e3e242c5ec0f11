"""Benchmark: ten of KTRDR's other indicators + fuzzy memberships on 1,000,000 bars (goal: at
most 1 s), and each of the 31 indicator types alone.

Run with ``python -m bench.bench_indicators``. Prints the section and writes it into
``docs/benchmarks.md`` (replacing an older run of this benchmark and nothing else).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_features import N_BARS, _three, synthetic_bars
from bench.docs import parse_args, publish
from pipeline.fuzzy import compute_fuzzy
from pipeline.indicators import SPECS, compute_indicators

GOAL_S = 1.0
HEADING = "## Ten more indicators and fuzzy features (1,000,000 bars)"
# The recursions that run one Python step per bar (over plain lists); all else is whole-array.
LOOPED = ("parabolicsar", "supertrend", "zigzag")

TEN = {
    "bbw": {"type": "bollingerbandwidth"},
    "squeeze": {"type": "squeezeintensity"},
    "kc": {"type": "keltnerchannels"},
    "st": {"type": "supertrend"},
    "ichi": {"type": "ichimoku"},
    "rvi": {"type": "rvi"},
    "fisher": {"type": "fishertransform"},
    "aroon": {"type": "aroon", "include_oscillator": True},
    "cmf": {"type": "cmf"},
    "vr": {"type": "volumeratio"},
}

FUZZY_SETS = {
    "squeeze": _three("squeeze", [0, 0.1, 0.3, 1]),
    "bbw": _three("bbw", [0, 0.01, 0.03, 0.1]),
    "rvi": _three("rvi", [-1, -0.2, 0.2, 1]),
    "fisher": _three("fisher", [-3, -1, 1, 3]),
    "aroon": _three("aroon.oscillator", [-100, -50, 50, 100]),
    "cmf": _three("cmf", [-1, -0.2, 0.2, 1]),
}


def features(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_fuzzy(compute_indicators(bars, TEN), FUZZY_SETS)


def timed(call: Any, runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``runs`` calls, after one untimed cold call (first-touch page
    faults). The CPU time (this process's, all single-threaded here) is what the call costs on
    a core of its own; on a shared machine the wall time also holds the waits for a core."""
    call()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def per_indicator(bars: pd.DataFrame, runs: int) -> list[tuple[str, int, float, float]]:
    """(type, columns, best wall s, best CPU s) of each type alone, default parameters."""
    rows = []
    for spec in SPECS:
        config: Mapping[str, dict] = {"x": {"type": spec.name}}
        columns = compute_indicators(bars.iloc[:100], config).shape[1]
        wall, cpu = timed(lambda c=config: compute_indicators(bars, c), runs)
        rows.append((spec.name, columns, min(wall), min(cpu)))
    return rows


def section(times: tuple[list[float], list[float]], n_columns: int,
            singles: list[tuple[str, int, float, float]]) -> str:
    wall, cpu = times
    best, median, best_cpu = min(wall), statistics.median(wall), min(cpu)
    load = os.getloadavg()[0]
    singles_rows = [f"| {name}{' (loop)' if name in LOOPED else ''} | {cols} | {secs:.3f} | "
                    f"{cpu_s:.3f} |" for name, cols, secs, cpu_s in singles]
    return "\n".join([
        HEADING,
        "",
        "`python -m bench.bench_indicators`: the seeded random-walk bars of `bench_features`;",
        "ten indicators none of the older strategies used (" + ", ".join(
            c["type"] for c in TEN.values()) + "), default parameters,",
        f"and {len(FUZZY_SETS)} fuzzy sets of 3 triangular memberships, timed together "
        f"(`compute_indicators` + `compute_fuzzy`); best and median of {len(wall)} runs after",
        "one untimed cold call, and the best CPU time of the process (the cost on a core of its",
        "own: on this shared box the wall time also holds waits for a core). Then each of the 31",
        "types alone (\"loop\": a recursion that steps once per bar in Python over plain lists;",
        "everything else is whole-array numpy/pandas).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work (1-minute "
        f"load average {load:.1f} at the end), Python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}.",
        "",
        "| bars | indicators | columns (indicators + fuzzy) | best (s) | median (s) | best CPU (s) "
        "| goal (s) | met |",
        "|---|---|---|---|---|---|---|---|",
        f"| {N_BARS:,} | {len(TEN)} | {n_columns} | {best:.3f} | {median:.3f} | {best_cpu:.3f} | "
        f"{GOAL_S} | {'yes' if best <= GOAL_S else 'no'} |",
        "",
        "| type alone (default parameters) | columns | best (s) | best CPU (s) |",
        "|---|---|---|---|",
        *singles_rows,
        "",
    ])


def main() -> None:
    args = parse_args(__doc__)
    runs = 2 if args.quick else 7
    bars = synthetic_bars()
    times = timed(lambda: features(bars), runs)
    n_columns = compute_indicators(bars.iloc[:100], TEN).shape[1] + 3 * len(FUZZY_SETS)
    singles = per_indicator(bars, 1 if args.quick else 3)
    publish(HEADING, section(times, n_columns, singles), args)


if __name__ == "__main__":
    main()
