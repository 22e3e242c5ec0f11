"""Benchmark: what running a job through the daemon costs, against training it in process.

Run with ``python -m bench.bench_overhead [--quick]``. Two ways, both in one run:

1. End to end. One ``ktrdr-daemon run`` (CPU, one slot, default timings) and, alternating with
   each of its jobs, the same job file trained the way ``ktrdr-daemon train`` does it (its live
   bar drawn on an in-memory terminal) in a fresh ``python`` that imported and warmed up
   everything first (``worker.warm_up()``, as the daemon's fork server does), timing
   ``load_job`` + ``run_training``. The daemon's time is ``claimed_at`` (its claim record) ->
   ``finished_at`` (result.json), both written by the daemon's own clock, so the bench never
   waits in the daemon's way. Identical runs on these shared machines differ by 10-30 % (other
   tenants change the CPU's speed over seconds): the ratio of consecutive in-process runs of
   the same file is shown as the noise floor, and end-to-end ratios cannot resolve 1 %.
2. The costs themselves, each measured in the same run as a fraction of a duration, so the
   machine's speed cancels out: the daemon's fixed cost per job (claim -> step 1 and step 12 ->
   result.json, against the same intervals of the in-process run), and what a worker adds while
   it trains (progress files, checkpoints, the cancel check per batch, waiting for the GIL
   its file thread holds) against what ``train``'s live bar adds (drawing, waiting for rich's
   refresh thread), in one warmed process alternating plain, worker and ``train`` runs.

Writes the ``## Daemon overhead`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_daemon import REPO, Site, load, read_json, utc_seconds
from bench.bench_daemon import spread as daemon_spread
from bench.docs import parse_args, publish, table_section
from ktrdr_daemon import spool as sp

HEADING = "## Daemon overhead"
WALL_JOB = {"strategy": "multi_indicator.yaml", "seed": 7}  # its own 30 epochs, early stopping
# The same strategy trained 150 epochs (no early stop): its fixed per-job cost weighs less.
LONG_WALL_JOB = {"strategy": "multi_indicator.yaml", "seed": 7, "overrides": {"training": {
    "epochs": 150, "early_stopping": {"patience": 1000}}}}

# The baseline: what `ktrdr-daemon train FILE` runs (its live bar drawn on a terminal, in memory
# here), in a process that paid its imports and lazy first-use costs before the clock starts.
# Steps 1 and 12 are time-stamped for the fixed costs.
_DIRECT = """
import io, json, sys, time
from pathlib import Path
from rich.console import Console
from ktrdr_daemon.console import TerminalReporter
from ktrdr_daemon.worker import warm_up
from pipeline.job import load_job
from pipeline.market_data import default_data_root
from pipeline.run import run_training
file, strategies, models = map(Path, sys.argv[1:4])
warm_up()
reporter = TerminalReporter(Console(file=io.StringIO(), force_terminal=True, width=100))
steps = {}
def on_event(event):
    if event["type"] == "step":
        steps[event["step"]] = time.time()
    reporter(event)
t0, wall0 = time.perf_counter(), time.time()
job = load_job(file, strategies_root=strategies)
result = run_training(job, data_root=default_data_root(), models_root=models, device="cpu",
                      threads=1, on_event=on_event)
reporter.close_bar()
seconds, wall1 = time.perf_counter() - t0, time.time()
print(json.dumps({"seconds": seconds, "start": steps[1] - wall0, "end": wall1 - steps[12],
                  "training": result.timings["training"]}))
"""

# The worker's additions, and those of `ktrdr-daemon train` (its live bar on a terminal), timed
# where they run, in one warmed process that alternates plain runs, worker runs and train runs:
# - on the training thread, as its CPU time with the timers' own cost (measured here, per call)
#   taken off: the worker's progress files (on_event), its checkpoints (copying the state and
#   handing it to the file thread, each time the worker's policy, IntervalCheckpoint with the
#   daemon's default interval, takes one), the train command's bar (on_event);
# - the cancel check and the checkpoint policy's check after every batch, too quick to time one
#   by one (a clock read costs more): their calls counted and priced by timing 100,000 of them
#   here;
# - another thread (the worker's file thread, rich's refresh thread) costs the training thread
#   only where both want the GIL at once: that is time the training thread spends off the CPU
#   (wall - its CPU time), beyond what plain runs show. None of these overlap.
_ACCOUNT = """
import io, json, sys, time
from pathlib import Path
from rich.console import Console
from ktrdr_daemon import spool as sp
from ktrdr_daemon.console import TerminalReporter
from ktrdr_daemon.progress import ProgressWriter
from ktrdr_daemon.worker import (SWITCH_INTERVAL_S, WorkerStop, WorkerTask, checkpoint_saver,
                                 warm_up)
from pipeline.checkpoint import IntervalCheckpoint
from pipeline.job import load_job
from pipeline.market_data import default_data_root
from pipeline.run import run_training
file, strategies, root = map(Path, sys.argv[1:4])
warm_up()
spent, calls = {}, {}
def timed(kind, fn):  # CPU time of this thread: waits for the GIL are counted apart
    def call(*args):
        t = time.thread_time()
        try:
            return fn(*args)
        finally:
            spent[kind] += time.thread_time() - t
            calls[kind] += 1
    return call
class Checkpoints:  # the worker's checkpoint callback: its copies and saves timed, checks counted
    def __init__(self, policy):
        self.policy, self.snapshot, self.timed = policy, None, None
    def on_batch_end(self, snapshot):
        calls["checkpoint_check"] += 1
        if snapshot is not self.snapshot:  # one function an epoch: wrapped once
            self.snapshot, self.timed = snapshot, timed("checkpoint", snapshot)
        self.policy.on_batch_end(self.timed)
    def on_handback(self, snapshot):
        self.policy.on_handback(timed("checkpoint", snapshot))
    def on_train_end(self, snapshot):
        self.policy.on_train_end(timed("checkpoint", snapshot))
def calibrate():  # what one timed call of nothing costs
    spent["probe"], calls["probe"], probe = 0.0, 0, timed("probe", lambda: None)
    t = time.thread_time()
    for _ in range(100000):
        probe()
    return (time.thread_time() - t) / 100000
default_switch = sys.getswitchinterval()
spool = sp.Spool(root / "spool-account")
spool.ensure_layout()
kinds = ["plain", "worker", "train"]
runs = []
for i in range(3 * int(sys.argv[4])):
    kind = kinds[(i + i // 3) % 3]  # each round starts with another kind
    for key in ("progress", "checkpoint", "display"):
        spent[key], calls[key] = 0.0, 0
    calls["cancel_check"] = calls["checkpoint_check"] = 0
    job = load_job(file, strategies_root=strategies)
    extra = {}
    if kind == "worker":
        job_dir = spool.jobs / f"{file.stem}-{i}"
        job_dir.mkdir()
        progress = ProgressWriter(job_dir, spool.tmp, job_id=job_dir.name, attempt=1,
                                  daemon="bench", host="bench", device="cpu")
        stop = WorkerStop(job_dir / sp.CANCEL)
        check = stop.reason
        def counted():
            calls["cancel_check"] += 1
            return check()
        stop.reason = counted
        policy = IntervalCheckpoint(timed("checkpoint", checkpoint_saver(progress.files, job_dir)),
                                    WorkerTask.checkpoint_seconds)
        extra = dict(on_event=timed("progress", progress), stop=stop,
                     checkpoints=Checkpoints(policy))
    elif kind == "train":  # what cmd_train draws, on a terminal that is a string here
        reporter = TerminalReporter(Console(file=io.StringIO(), force_terminal=True, width=100))
        extra = dict(on_event=timed("display", reporter))
    overhead = calibrate()
    sys.setswitchinterval(SWITCH_INTERVAL_S if kind == "worker" else default_switch)  # as run_with
    t0, c0 = time.perf_counter(), time.thread_time()
    result = run_training(job, data_root=default_data_root(), models_root=root / "models-account",
                          device="cpu", threads=1, **extra)
    if kind == "worker":
        progress.close()
    elif kind == "train":
        reporter.close_bar()
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    row = {"kind": kind, "wall": wall, "off_cpu": wall - cpu,
           "training": result.timings["training"],
           "epochs": len(result.metrics["training"]["history"])}
    row.update({k: max(0.0, spent[k] - calls[k] * overhead)
                for k in ("progress", "checkpoint", "display")})
    if kind == "worker":
        t = time.thread_time()
        for _ in range(100000):
            check()
        row["cancel_check"] = calls["cancel_check"] * (time.thread_time() - t) / 100000
        idle = IntervalCheckpoint(lambda state: None, 3600.0)  # never due: the check alone
        t = time.thread_time()
        for _ in range(100000):
            idle.on_batch_end(dict)
        row["checkpoint_check"] = calls["checkpoint_check"] * (time.thread_time() - t) / 100000
        row["checkpoints"] = calls["checkpoint"] // 2  # each a timed copy and a timed save
    runs.append(row)
print(json.dumps(runs))
"""


NOTES = """How the costs came down (this benchmark's method, earlier runs of it and of its parts):

- Before, a daemon job took 1.18x (a 1.5 s job) and 1.29x (an 8 s job) of a warmed fresh process
  in the previous benchmark; in one process, the worker's progress files and checkpoints took
  4.8 % of a 150-epoch job's time on the training thread (events 1.2 %, checkpoints 3.6 %).
- Checkpoints (71e84a3, d9dcbbd): `torch.save` paid ~40 us per tensor and ~1 us per plain value
  (the history alone was 2,100 values by epoch 150): 2.7 ms an epoch. Packed into a few flat
  tensors and one JSON text by a packer that keeps its views of the same tensors between
  epochs: 0.7-0.8 ms of the training thread's CPU an epoch (the table), and ~0.2 ms of the
  file thread's for `torch.save`.
- Files (051d80f): each atomic replace costs ~0.3 ms on ext4, which starts writing the new
  file's blocks at the rename (`auto_da_alloc`); progress.json and the checkpoint are now
  written by a thread of the worker, so the system calls leave the training thread. Batch
  events are sent at most 10 a second counted from any event (479 -> ~190 in that job).
- The cancel check (a19a532): `os.path.lexists` raised and caught FileNotFoundError every batch,
  ~2.7 us, ~0.4 % of training with 0.3-1 ms batches; now `faccessat`, at most every 2 ms.
- Start (2a603b7, 4642aed): claim -> first event 45-67 ms -> 10-14 ms (see the Daemon section).
- Re-measured on a quieter box (epochs of ~50 ms instead of ~95 ms, so every per-epoch cost
  counts twice as much) before the next three changes: 1.0137x (30 epochs) and 1.0148x (150
  epochs) from the costs, goal not met; the worker added 2.9-3.2 % while training, 1.7 % of it
  waiting for the GIL.
- Checkpoint bytes (19a8333): a JSON header and the tensors' raw bytes joined in C, not
  `torch.save` (~0.21 -> ~0.04 ms of the file thread's Python, all of it holding the GIL); the
  packer only copies tensors on the training thread and leaves the values to the file thread;
  the best weights are copied into the same tensors, so the packer's views stay valid.
- The checkpoint's hand-over (19a8333) makes its folder and paths once, not every epoch: ~130
  -> ~17 us an epoch of the training thread's CPU (`thread_time` around the call, in place).
- Wake-ups (e28dd6c): the file thread is woken by the first of an epoch's four items only and
  writes them in one batch after 3 ms (waking a waiting thread cost the caller ~30 us of CPU
  here, timed alone). With the two changes above and the progress encoders made once, the
  worker's additions while training went 2.99 % -> 1.97 % (150 epochs, this method).
- Switch interval (3329aa6): the file thread gives up the GIL at each of its ~12 system calls an
  epoch and takes it back; with CPython's 5 ms interval the training thread waited longer for
  it. 1 ms in the worker: its time off the CPU 1.54-1.65 % -> 1.14-1.16 % (two A/B pairs, 150
  epochs). Moving the progress JSON to the file thread as well did not help (the GIL it holds
  there is time the training thread waits) and was left out.
- Python after an epoch runs on cold caches (the same code called twice in a row: ~3x faster
  the second time), which is why each remaining line of the per-epoch path costs what it does.
  The same method finds `train`'s live bar costing as much (rich redraws 10 times a second
  from its own thread), so a job costs about the same either way.
- Checkpoints on a time interval (issue 16): at most every `checkpoint_seconds` (30 s by
  default), always at a hand-back and at the end, through the trainer's checkpoint callback;
  `torch.save` of plain state dicts (`last.pt`) replaced the packer and the hand-written format.
  A job shorter than the interval takes one checkpoint, at the end; the trainer pays a clock
  read after each batch for the policy. Full runs of both codes back to back on this box (the
  old one first; other agents' work put the load at 1.6-7 during the old run and 4-13 during
  the new, when even plain runs spent 26-32 % of their time off the CPU, so the GIL-wait and
  `train` rows of this run are noise and its end-to-end jobs took 2-7x their unloaded time).
  CPU time of the training thread, which load does not inflate: checkpoints 0.37 % -> 0.02 %
  + 0.01 % for the policy's checks (30 epochs) and 0.47 % -> 0.00 % + 0.01 % (150 epochs),
  0.30-0.34 -> 0.00-0.02 ms an epoch; all the worker's additions while training 0.71 % ->
  0.28 % and 0.82 % -> 0.33 %. From the measured costs the old code came to 0.9981x and
  0.9791x, the new to 0.9645x and 1.0020x (1.0097x and 1.0038x against a run with no progress
  at all, old 1.0178x and 1.0093x). An A/B of the accounting alone right after (5 runs of each
  kind per code, 30 epochs, load 8-9): checkpoints 0.34 -> 0.024 ms an epoch, 0.08 % -> 0.02 %
  with the checks. Before this session's runs, on a quiet box: 0.9997x and 1.0036x with
  checkpoints at 0.45 % and 0.67 % (the table's previous version)."""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _direct(job_file: Path, site: Site) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _DIRECT, str(job_file), str(site.strategies),
                          str(site.root / "models-direct")], env=_env(), capture_output=True,
                         text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _daemon(site: Site, job_id: str, job: dict[str, Any]) -> dict[str, float]:
    """One job through the daemon, its times read from the files the daemon wrote."""
    site.drop(job_id, job)
    job_dir = site.job_dir(job_id)
    deadline = time.monotonic() + 600
    while not (job_dir / sp.RESULT).exists():  # a lazy poll: never in the daemon's way
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} did not end")
        time.sleep(0.2)
    site.wait_worker_gone(job_id)
    result = read_json(job_dir / sp.RESULT)
    if result.get("state") != "completed":
        raise RuntimeError(f"{job_id}: {result}")
    claimed = utc_seconds(read_json(job_dir / "attempts" / "1.claim")["claimed_at"])
    steps = {}
    for line in (job_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "step":
            steps[event["step"]] = utc_seconds(event["at"])
    finished = utc_seconds(result["finished_at"])
    return {"seconds": finished - claimed, "start": steps[1] - claimed,
            "end": finished - steps[12], "training": result["timings"]["training"]}


def spread(values: list[float], digits: int = 3) -> dict[str, Any]:
    return daemon_spread(values, 1.0, digits, at=(10, 50, 90))


def fmt(s: dict[str, Any], unit: str = "") -> str:
    return (f"p50 {s['p50']}{unit} (p10 {s['p10']}, p90 {s['p90']}; min {s['min']}, "
            f"max {s['max']}; n {s['n']})")


def end_to_end(site: Site, job: dict[str, Any], tag: str, pairs: int) -> dict[str, Any]:
    job_file = site.root / f"{tag}-job.yaml"
    job_file.write_text(json.dumps(job) + "\n")
    load_before = load()
    daemon, direct = [], []
    for i in range(pairs):
        order = ("daemon", "direct") if i % 2 == 0 else ("direct", "daemon")
        for kind in order:
            if kind == "daemon":
                daemon.append(_daemon(site, f"{tag}-{i:02d}", job))
            else:
                direct.append(_direct(job_file, site))
        print(f"  {tag} {i}: daemon {daemon[-1]['seconds']:.2f} s, in process "
              f"{direct[-1]['seconds']:.2f} s ({daemon[-1]['seconds'] / direct[-1]['seconds']:.3f}"
              f"x); fixed extra {1e3 * _fixed(daemon[-1], direct[-1]):.1f} ms", flush=True)
    ratios = [d["seconds"] / f["seconds"] for d, f in zip(daemon, direct, strict=True)]
    floor = [a["seconds"] / b["seconds"] for a, b in zip(direct, direct[1:], strict=False)]
    fixed = [_fixed(d, f) for d, f in zip(daemon, direct, strict=True)]
    return {
        "daemon": spread([d["seconds"] for d in daemon], 2),
        "direct": spread([f["seconds"] for f in direct], 2),
        "ratio": spread(ratios),
        "ratio_of_medians": round(float(np.median([d["seconds"] for d in daemon])
                                        / np.median([f["seconds"] for f in direct])), 3),
        "floor": spread(floor),
        "start": spread([1e3 * (d["start"] - f["start"]) for d, f in zip(daemon, direct,
                                                                           strict=True)], 1),
        "end": spread([1e3 * (d["end"] - f["end"]) for d, f in zip(daemon, direct,
                                                                     strict=True)], 1),
        "fixed_fraction": float(np.median([x / f["seconds"] for x, f in zip(fixed, direct,
                                                                              strict=True)])),
        "load": f"{load_before} -> {load()}",
    }


def _fixed(daemon: dict[str, float], direct: dict[str, float]) -> float:
    """Seconds the daemon adds before step 1 and after step 12 (claim, hand-off to a worker,
    reading job.yaml; result.json), over what the in-process run spends there."""
    return (daemon["start"] - direct["start"]) + (daemon["end"] - direct["end"])


def accounting(root: Path, strategies: Path, job: dict[str, Any], tag: str,
               runs: int) -> dict[str, Any]:
    job_file = root / f"{tag}-account.yaml"
    job_file.write_text(json.dumps(job) + "\n")
    load_before = load()
    out = subprocess.run([sys.executable, "-c", _ACCOUNT, str(job_file), str(strategies),
                          str(root), str(runs)], env=_env(), capture_output=True, text=True,
                         check=True, cwd=REPO)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    by = {kind: [r for r in rows if r["kind"] == kind] for kind in ("plain", "worker", "train")}

    def share(kind: str, key: str) -> float:
        return float(np.median([r[key] / r["wall"] for r in by[kind]]))

    off_cpu = {kind: 100 * share(kind, "off_cpu") for kind in by}
    worker = {k: share("worker", k)
              for k in ("progress", "checkpoint", "checkpoint_check", "cancel_check")}
    # Time off the CPU beyond what plain runs show: waiting for the GIL another thread holds.
    worker["gil_wait"] = max(0.0, (off_cpu["worker"] - off_cpu["plain"]) / 100)
    train = {"display": share("train", "display"),
             "gil_wait": max(0.0, (off_cpu["train"] - off_cpu["plain"]) / 100)}
    per_epoch = {k: float(np.median([1e3 * r[k] / r["epochs"] for r in by["worker"]]))
                 for k in ("progress", "checkpoint")}
    epoch_ms = float(np.median([1e3 * r["training"] / r["epochs"] for r in rows]))
    print(f"  {tag}: worker {', '.join(f'{k} {100 * v:.2f} %' for k, v in worker.items())}; "
          f"train {', '.join(f'{k} {100 * v:.2f} %' for k, v in train.items())}; off CPU "
          + ", ".join(f"{k} {v:.2f} %" for k, v in off_cpu.items()), flush=True)
    saves = int(np.median([r["checkpoints"] for r in by["worker"]]))
    return {"worker": worker, "train": train, "per_epoch": per_epoch, "epoch_ms": epoch_ms,
            "saves": saves,
            "runs": len(by["worker"]), "epochs": rows[0]["epochs"], "off_cpu": off_cpu,
            "load": f"{load_before} -> {load()}"}


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def report(r: dict[str, Any], quick: bool) -> str:
    rows = []
    for tag, title in (("short", "multi_indicator, its own 30 epochs (early stopping)"),
                       ("long", "the same, 150 epochs")):
        e, a = r[tag]["e2e"], r[tag]["account"]
        worker, train = sum(a["worker"].values()), sum(a["train"].values())
        vs_train = 1 + e["fixed_fraction"] + worker - train
        vs_plain = 1 + e["fixed_fraction"] + worker
        w = a["worker"]
        rows += [
            f"| **{title}** | | | | |",
            f"| end to end: daemon (claim -> result.json), s | {fmt(e['daemon'])} | | | "
            f"{e['load']} |",
            f"| end to end: in process, s (`load_job` + `run_training` with `train`'s live bar, "
            f"in a warmed fresh process) | {fmt(e['direct'])} | | | |",
            f"| end to end: daemon / in process, per pair | {fmt(e['ratio'], 'x')}; ratio of "
            f"medians {e['ratio_of_medians']}x | | | |",
            f"| noise floor: one in-process run / the next one of the same file | "
            f"{fmt(e['floor'], 'x')} | | | |",
            f"| daemon, fixed per job: before step 1 (claim, hand-off to the spare worker, "
            f"job.yaml), ms | {fmt(e['start'])} | | | |",
            f"| daemon, fixed per job: after step 12 (result.json), ms | {fmt(e['end'])} | | | |",
            f"| daemon, while training: progress files / checkpoints ({a['saves']} taken, "
            f"copy and hand-over; the policy's check after each batch) / cancel checks | "
            f"{_pct(w['progress'])} / {_pct(w['checkpoint'])} + {_pct(w['checkpoint_check'])} / "
            f"{_pct(w['cancel_check'])} "
            f"({a['per_epoch']['progress']:.2f} + {a['per_epoch']['checkpoint']:.2f} ms an "
            f"epoch of {a['epoch_ms']:.0f} ms) | | | {a['load']} |",
            f"| daemon, while training: waiting for the GIL (its file thread) | "
            f"{_pct(w['gil_wait'])} (off the CPU {a['off_cpu']['worker']:.2f} % against "
            f"{a['off_cpu']['plain']:.2f} % in plain runs) | | | |",
            f"| `train`, while training: drawing its bar / waiting for the GIL (rich's refresh "
            f"thread) | {_pct(a['train']['display'])} / {_pct(a['train']['gil_wait'])} | | | |",
            f"| **daemon / in-process `train`, from the measured costs** (1 + fixed "
            f"{_pct(e['fixed_fraction'])} + daemon {_pct(worker)} - train {_pct(train)}) | "
            f"**{vs_train:.4f}x** | <= 1.01x | {'yes' if vs_train <= 1.01 else 'NO'} | |",
            f"| daemon / a run with no progress at all (1 + fixed + daemon) | {vs_plain:.4f}x | "
            f"| | |",
        ]
    return table_section(HEADING, (
        f"`python -m bench.bench_overhead{' --quick' if quick else ''}` (the module docstring "
        "has the method): a job through one `ktrdr-daemon run` (CPU, one slot) against the "
        "same file trained in process as `ktrdr-daemon train` does it, in one run. End to end, "
        "pairs alternate which goes first; their ratio is shown with the noise floor of "
        "identical runs, which on this shared machine is far wider than 1 %. The goal is judged "
        "on the costs themselves, each a fraction of a duration measured in the same run, so "
        "the machine's changing speed cancels out: the daemon's fixed cost per job (its own "
        "time stamps in the claim, events.jsonl and result.json, against the same intervals of "
        "the in-process run) and what a worker, or `train`'s live bar, adds while training "
        f"(median of {r['short']['account']['runs']} runs of each, alternating with plain "
        "runs, in one warmed process running their code). Spreads: p50 (p10, p90; min, max; "
        "n). Load average (1/5/15 min) at start -> end. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}."
    ), rows, NOTES)


def main() -> None:
    args = parse_args(__doc__)
    pairs, runs = (2, 1) if args.quick else (12, 5)
    base = Path(tempfile.mkdtemp(prefix="bench-overhead-"))  # noqa: SIM115
    r: dict[str, Any] = {}
    try:
        with Site(base / "site") as site:
            for tag, job in (("short", WALL_JOB), ("long", LONG_WALL_JOB)):
                print(f"{tag}: {pairs} pairs end to end; load {load()}", flush=True)
                r[tag] = {"e2e": end_to_end(site, job, tag, pairs)}
                print(f"{tag}: {runs} runs of the worker's additions; load {load()}",
                      flush=True)
                r[tag]["account"] = accounting(site.root, site.strategies, job, tag, runs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    publish(HEADING, report(r, args.quick), args)


if __name__ == "__main__":
    main()
