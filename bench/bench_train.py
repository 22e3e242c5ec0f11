"""Benchmark: a whole ``train`` of ``config/strategies/multi_indicator.yaml``, step by step.

Run with ``python -m bench.bench_train``. Calls :func:`pipeline.run.run_training` (the code the
CLI's ``train`` and every daemon worker run) three times in one process on the bundled EURUSD
file, CPU, one torch thread (the default), each run into its own temporary model store. Reports
the median seconds of each of the twelve steps (``RunResult.timings``), of their sum and of the
wall time around the call, and the trainer's samples/s. The first run pays module warm-up
(TA-Lib-free numpy paths, torch kernels), which the median absorbs. Writes its own section of
``docs/benchmarks.md``, replacing an older run of this benchmark and nothing else.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.docs import DOC, write_section
from pipeline import run as run_module
from pipeline.events import STEPS
from pipeline.job import load_job
from pipeline.market_data import default_data_root
from pipeline.run import run_training

REPO = Path(__file__).resolve().parent.parent
STRATEGY = REPO / "config" / "strategies" / "multi_indicator.yaml"
REPEATS = 3
HEADING = "## Whole train of multi_indicator, step by step"


REPORT_SECONDS: list[float] = []


def _timed(draw):
    """Time the report drawing inside step 11 (model saving) without changing what it does."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return draw(*args, **kwargs)
        finally:
            REPORT_SECONDS.append(time.perf_counter() - start)
    return wrapper


def one_run(models_root: Path) -> tuple[dict[str, float], float, dict]:
    job = load_job(STRATEGY)
    start = time.perf_counter()
    result = run_training(job, data_root=default_data_root(), models_root=models_root,
                          device="cpu", threads=1)
    wall = time.perf_counter() - start
    return result.timings, wall, result.metrics["training"]


def main() -> None:
    runs: list[dict[str, float]] = []
    walls: list[float] = []
    training: list[dict] = []
    load_before = os.getloadavg()[0]
    if hasattr(run_module, "_draw_report"):
        run_module._draw_report = _timed(run_module._draw_report)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for i in range(REPEATS):
            timings, wall, summary = one_run(Path(tmp) / f"models{i}")
            runs.append(timings)
            walls.append(wall)
            training.append(summary)
            print(f"run {i + 1}: {wall:.3f} s wall, {summary['epochs_run']} epochs, "
                  f"{summary['samples_per_second']:,.0f} samples/s", flush=True)
    load_after = os.getloadavg()[0]
    median = {step: statistics.median(r.get(step, 0.0) for r in runs) for step in STEPS}
    per_run_total = statistics.median(sum(r.values()) for r in runs)
    total = sum(median.values())
    report = statistics.median(REPORT_SECONDS) if REPORT_SECONDS else None
    if report is not None:
        store_rest = statistics.median(
            r["model saving"] - d for r, d in zip(runs, REPORT_SECONDS, strict=True))
    wall = statistics.median(walls)
    rate = statistics.median(t["samples_per_second"] for t in training)
    epochs = sorted({t["epochs_run"] for t in training})
    rows = [f"| {n}. {step} | {median[step]:.3f} | {median[step] / total:.0%} |"
            for n, step in enumerate(STEPS, start=1)]
    for row in rows:
        print(row)
    print(f"sum of medians {total:.3f} s, median run {per_run_total:.3f} s (wall {wall:.3f} s),"
          f" trainer {rate:,.0f} samples/s, report.png {report}")
    section = "\n".join([
        HEADING,
        "",
        f"`python -m bench.bench_train`: `run_training` (what `ktrdr-daemon train` runs) on "
        f"`config/strategies/multi_indicator.yaml` (EURUSD 1h, 5,000 bars, 3 indicators, "
        f"12 features, MLP [64, 32], batch 64, early stopping), CPU, 1 torch thread, "
        f"{REPEATS} runs in one process, each into a fresh model store; median seconds per "
        f"step. Epochs run: {', '.join(map(str, epochs))} (early stopping; same seed, so the "
        f"same every run).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}; 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after (a shared machine: other work "
        "competes for the CPUs).",
        "",
        "| step | median (s) | share |",
        "|---|---|---|",
        *rows,
        f"| **sum of the step medians** | **{total:.3f}** | 100% |",
        "",
        f"Median of the per-run sums of steps: {per_run_total:.3f} s; wall time around "
        f"`run_training`: {wall:.3f} s (median). "
        + (f"Of step 11, drawing `report.png` (matplotlib) took {report:.3f} s (median; "
           f"first run {REPORT_SECONDS[0]:.3f} s, which includes importing matplotlib); "
           f"the rest of it (writing and fsyncing the store files, the rename) "
           f"{store_rest:.3f} s. "
           if report is not None else "")
        + f"Trainer throughput "
        f"(`metrics.training.samples_per_second`, training batches only): {rate:,.0f} "
        "samples/s (median). Per run: "
        + "; ".join(f"{w:.2f} s, {t['samples_per_second']:,.0f} samples/s"
                    for w, t in zip(walls, training, strict=True)) + ".",
    ])
    write_section(HEADING, section)
    print(f"wrote {HEADING!r} in {DOC}")


if __name__ == "__main__":
    main()
