"""Benchmark: LSTM training. ``train_model`` on sequence windows against a minimal hand-written
loop over the same windows (goal >= 0.9x), and whole runs of KTRDR's LSTM strategies against
KTRDR's own training code (goal: at least 2x faster at the same thread count).

Run with ``python -m bench.bench_sequence [--ktrdr-strategies DIR]``. DIR is KTRDR's
``strategies/`` folder (a checkout of kpiteira/ktrdr; its files are never copied here); without
it the whole-run rows are left out. KTRDR's side cannot run in this project's environment (its
own pins, Python 3.11), so its figures are the ones measured by hand and recorded in
:data:`KTRDR_MEASURED`, with how they were taken. One torch thread on both sides.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.bench_trainer import minimal_loop
from bench.docs import publish
from pipeline.job import load_job
from pipeline.market_data import default_data_root
from pipeline.run import run_training
from pipeline.sequence import Windows, build_recurrent
from pipeline.stop import StopToken
from pipeline.trainer import TrainingConfig, seed_everything, train_model

HEADING = "## Sequence models (LSTM)"
# Validation is 5 % of the training rows, as in bench_trainer (20,000 and 1,000): it is work
# the minimal loop does not do, and an LSTM's forward pass is not free.
ROWS, VAL_ROWS, LENGTH, BATCH = 4_000, 200, 20, 64
SHAPES = {"64 x 2 (trend_tb_lstm_signal_v1)": (16, 64, 2, 0.3),
          "28 x 1 (squad_c14_ablation_momentum)": (18, 28, 1, 0.2)}
GOAL_LOOP, GOAL_RUN = 0.9, 2.0
# KTRDR's LSTM strategies as whole runs: 20 epochs on the bundled EURUSD 1h, one thread.
_ONE_HOUR = {"start": "2015-01-01", "end": "2020-12-31", "overrides": {
    "training": {"epochs": 20},
    "training_data": {"timeframes": {"mode": "single", "timeframe": "1h"}}}}
# Row -> (KTRDR's strategy file, our job's keys). The last row trains on the labels KTRDR
# actually computes for that file (it never reads the four barrier keys and falls back to
# H 50 bars, span 50): the same task, so its test metrics compare.
RUNS = {
    "squad_c14_ablation_momentum": ("squad_c14_ablation_momentum",
                                    {"overrides": {"training": {"epochs": 20}}}),
    "trend_tb_lstm_signal_v1": ("trend_tb_lstm_signal_v1", _ONE_HOUR),
    "trend_tb_lstm_signal_v1, KTRDR's effective labels": ("trend_tb_lstm_signal_v1", {
        **_ONE_HOUR, "overrides": {**_ONE_HOUR["overrides"], "training": {
            "epochs": 20, "labels": {"max_holding_bars": 50, "atr_period": 50}}}}),
}
KTRDR_HOW = (
    "measured by hand on this machine in the same session as our side, runs alternating with "
    "ours: its LocalTrainingOrchestrator._execute_v3_training run from source (kpiteira/ktrdr "
    "HEAD, its own venv, torch 2.13 CPU) by a scratch script on the same strategy files "
    "restricted the same way (1h, 20 epochs), torch.set_num_threads(1), the bundled EURUSD 1h "
    "written into its data cache first; seconds of that one call (data, indicators, fuzzy, "
    "labels, training, evaluation, saving), best of 12 runs, taken at load 3.5-3.7: squad_c14 "
    "5.3 s (the others 6-59 s), trend_tb 11.2 s (the others 20-70 s). KTRDR seeds nothing, so "
    "its test metrics are means over the runs: squad_c14 accuracy 0.599 (0.52-0.69), f1 0.633 "
    "(0.57-0.70); trend_tb accuracy 0.453 (0.27-0.52), f1 0.431 (0.32-0.50). For trend_tb our "
    "labels differ from KTRDR's by design (docs/differences.md: its triple-barrier keys are "
    "read, H 24 bars where KTRDR falls back to 50), and our split is purged: the row with "
    "KTRDR's effective labels is the like-for-like one. Both sides run the same oneDNN LSTM "
    "kernels, which take most of a training batch (about 70 % in a profile of the 28 x 1 "
    "network, forward and backward, the rest mostly Adam), so a loop around them cannot be "
    "twice as fast: the 2x goal is not met for LSTMs; ours wins on the rest (no per-window "
    "DataLoader, faster labelling) and pays for the report, importance and TorchScript.")
KTRDR_MEASURED = {  # 2026-12-06 23:47 - 2026-12-07 00:28 UTC, load average 3 - 19 on 2 cores
    "squad_c14_ablation_momentum": {"seconds": 5.3, "test_accuracy": 0.599, "f1": 0.633},
    "trend_tb_lstm_signal_v1": {"seconds": 11.2, "test_accuracy": 0.453, "f1": 0.431},
}


def throughput(shape: tuple, repeats: int) -> tuple[float, float, float, float]:
    """Best and median samples/s of (minimal loop, train_model), interleaved repeats."""
    features, hidden, layers, dropout = shape
    g = torch.Generator().manual_seed(0)
    X, Xv = torch.randn(ROWS, features, generator=g), torch.randn(VAL_ROWS, features, generator=g)
    train, val = Windows.over(X, LENGTH, [ROWS]), Windows.over(Xv, LENGTH, [VAL_ROWS])
    y = torch.randint(0, 3, (len(train),), generator=g)
    yv = torch.randint(0, 3, (len(val),), generator=g)
    view = X.unfold(0, LENGTH, 1).transpose(1, 2)
    config = TrainingConfig(epochs=1, batch_size=BATCH, learning_rate=1e-3)
    rates: dict[str, list[float]] = {"minimal": [], "trainer": []}
    for repeat in range(repeats + 1):  # repeat 0 warms up and is not kept
        for name in rates:
            seed_everything(0)
            model = build_recurrent("lstm", features, hidden, layers, dropout, LENGTH)
            start = time.perf_counter()
            if name == "minimal":
                minimal_loop(model, view, y, 1, BATCH)  # over the unfold windows
            else:
                train_model(model, train, y, val, yv, config, device=torch.device("cpu"),
                            on_event=lambda event: None, stop=StopToken())
            if repeat > 0:
                rates[name].append(len(train) / (time.perf_counter() - start))
    return (max(rates["minimal"]), max(rates["trainer"]),
            statistics.median(rates["minimal"]), statistics.median(rates["trainer"]))


def kernel_step(shape: tuple, onednn: bool, steps: int = 60) -> float:
    """Median seconds of one training step (forward, loss, backward, Adam) of the bare LSTM,
    with torch's oneDNN kernels (what both sides run) or its native ATen ones: is there a
    faster CPU kernel to move to? (The answer sets what a whole run can gain.)"""
    features, hidden, layers, dropout = shape
    seed_everything(0)
    model = build_recurrent("lstm", features, hidden, layers, dropout, LENGTH)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(BATCH, LENGTH, features), torch.randint(0, 3, (BATCH,))
    times = []
    with torch.backends.mkldnn.flags(enabled=onednn):
        for _ in range(steps):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return statistics.median(times[steps // 6:])


def whole_run(strategies: Path, row: str, repeats: int) -> tuple[float, dict]:
    """Best seconds of run_training (all twelve steps) and the test metrics."""
    best, test = float("inf"), {}
    name, keys = RUNS[row]
    for _ in range(repeats):
        job = load_job({"strategy": f"{name}.yaml", **keys}, strategies_root=strategies)
        with tempfile.TemporaryDirectory() as models:
            start = time.perf_counter()
            result = run_training(job, data_root=default_data_root(), models_root=Path(models),
                                  threads=1)
            best = min(best, time.perf_counter() - start)
        test = result.metrics["test"]
    return best, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    parser.add_argument("--ktrdr-strategies", type=Path, default=None,
                        help="KTRDR's strategies folder, for the whole-run rows")
    args = parser.parse_args()
    strategies = args.ktrdr_strategies
    torch.set_num_threads(1)
    repeats = 1 if args.quick else 5
    rows = []
    for label, shape in SHAPES.items():
        base, ours, base_med, ours_med = throughput(shape, repeats)
        ratio = ours / base
        rows.append(f"| LSTM {label}, batch {BATCH}: train_model vs minimal loop | "
                    f"{ours:,.0f} vs {base:,.0f} samples/s = {ratio:.2f}x (medians "
                    f"{ours_med / base_med:.2f}x) | >= {GOAL_LOOP}x | "
                    f"{'yes' if ratio >= GOAL_LOOP else 'NO'} | {_load()} |")
        print(rows[-1], flush=True)
    for label, shape in SHAPES.items():
        onednn, native = kernel_step(shape, True), kernel_step(shape, False)
        rows.append(f"| LSTM {label}, batch {BATCH}, one training step: native ATen kernels vs "
                    f"oneDNN (the default both sides run) | {native * 1e3:.2f} vs "
                    f"{onednn * 1e3:.2f} ms = {onednn / native:.2f}x | (a faster kernel?) | "
                    f"{'yes' if native < onednn else 'no'} | {_load()} |")
        print(rows[-1], flush=True)
    for name in RUNS if strategies is not None else ():
        seconds, test = whole_run(strategies, name, 1 if args.quick else 3)
        theirs = KTRDR_MEASURED[RUNS[name][0]]
        speedup = theirs["seconds"] / seconds
        as_good = (test["test_accuracy"] >= theirs["test_accuracy"]
                   and test["f1"] >= theirs["f1"])
        met = ("yes" if speedup >= GOAL_RUN and as_good else
               "speed yes, metrics NO" if speedup >= GOAL_RUN else "NO")
        rows.append(f"| {name}, 20 epochs, whole run: ours vs KTRDR's | {seconds:.1f} s vs "
                    f"{theirs['seconds']:.1f} s = {speedup:.2f}x; test accuracy "
                    f"{test['test_accuracy']:.3f} vs {theirs['test_accuracy']:.3f}, f1 "
                    f"{test['f1']:.3f} vs {theirs['f1']:.3f} | >= {GOAL_RUN}x, metrics at "
                    f"least as good | {met} | {_load()} |")
        print(rows[-1], flush=True)
    intro = (
        f"`python -m bench.bench_sequence --ktrdr-strategies <ktrdr>/strategies`: CPU, one "
        f"torch thread on both sides. Throughput: {ROWS:,} random rows, windows of {LENGTH} "
        f"(stride 1, a strided view), 1 epoch per run, best of {repeats} interleaved repeats "
        "after a warm-up (medians alongside); the minimal loop is randperm + gather from the "
        "unfold view + forward + loss + backward + clip + step, `train_model` also validates "
        f"on {VAL_ROWS:,} rows' windows, checks a stop token per batch and emits events. "
        "Whole runs: `run_training` (all twelve steps, report drawing included), best of 3, "
        "against KTRDR's own training code run from source in the same session. "
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}; shared by several agents, so best runs are compared.")
    notes = f"KTRDR's side: {KTRDR_HOW}"
    publish(HEADING, "\n".join([HEADING, "", intro, "",
                                "| what | measured | goal | met | load |",
                                "|---|---|---|---|---|", *rows, "", notes]), args)


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
