"""Benchmark: the daemon's latencies and idle cost against one real ``ktrdr-daemon run``.

Run with ``python -m bench.bench_daemon [--quick]``. Each phase starts the daemon as an operator
would (its own process, default timings: rescan and heartbeat every 2 s, CPU device, one slot)
on a fresh spool under a temporary folder, and watches the spool from outside with inotify
(ctypes, no polling): a time is taken when the bench process sees the file, so every figure
includes the kernel's and this process's wake-up, never less than what a user would see.

1. drop -> claim: a job file renamed into ``incoming/`` until ``attempts/1.claim`` exists;
2. drop -> ``"state": "running"`` in ``progress.json``;
3. cancel -> ``result.json`` (cancelled): the marker touched while the job is training;
(4. what a job costs in the daemon against training it in process: ``bench.bench_overhead``)
5. idle CPU of the daemon and everything it started (psutil), empty spool and 1,000 finished jobs;
6. with 10,000 queued jobs (waiting for a GPU, so this CPU daemon holds them but cannot run
   them): drop -> claim of a new high-priority job, ``ktrdr-daemon ls`` wall time, and the
   rescan's pieces timed in this process.

Writes the ``## Daemon`` section of ``docs/benchmarks.md`` (read just before writing; other
sections belong to other benchmarks).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.docs import parse_args, publish, table_section
from ktrdr_daemon import spool as sp

REPO = Path(__file__).resolve().parent.parent
HEADING = "## Daemon"
DAEMON_ID = "bench-cpu"
LONG_JOB = {"strategy": "rsi_minimal.yaml", "seed": 7,
            "overrides": {"training": {"epochs": 200, "batch_size": 16}}}

# --- watching the spool from outside: inotify through ctypes ---------------------------------

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_TO, _IN_CREATE = 0x80, 0x100
_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
_libc = ctypes.CDLL(None, use_errno=True)


def wait_for(dirs: list[Path], predicate: Callable[[], Any], timeout: float = 120.0) -> float:
    """``time.perf_counter()`` when ``predicate()`` first holds, woken by inotify on ``dirs``.

    Watches are added before every check, so a change between the check and the wait still
    raises an event (no race); folders that appear later are watched as they appear.
    """
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    watched: set[Path] = set()
    deadline = time.monotonic() + timeout
    try:
        while True:
            for folder in dirs:
                if folder not in watched and _libc.inotify_add_watch(
                        fd, os.fsencode(folder), _MASK) >= 0:
                    watched.add(folder)
            if predicate():
                return time.perf_counter()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited {timeout:.0f} s for {dirs[-1]}")
            if select.select([fd], [], [], min(left, 1.0))[0]:
                try:
                    while os.read(fd, 1 << 16):
                        pass
                except BlockingIOError:
                    pass
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def utc_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- a site and its daemon ---------------------------------------------------------------------


class Site:
    """A spool, models and strategies under one temporary folder, and one daemon serving it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool = sp.Spool(root / "spool")
        self.models, self.strategies = root / "models", root / "strategies"
        self.runtime = root / "run"
        for folder in (self.models, self.strategies, self.runtime):
            folder.mkdir(parents=True, exist_ok=True)
        self.spool.ensure_layout()
        for strategy in (REPO / "config" / "strategies").glob("*.yaml"):
            shutil.copy(strategy, self.strategies / strategy.name)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "daemon.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
        env.update(KTRDR_CONFIG=str(self.root / "none.yaml"), XDG_RUNTIME_DIR=str(self.runtime),
                   PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        command = [sys.executable, "-m", "ktrdr_daemon.cli", "run", "--spool",
                   str(self.spool.root), "--models", str(self.models), "--strategies",
                   str(self.strategies), "--daemon-id", DAEMON_ID, "--slots", "1",
                   "--device", "cpu"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        beat = self.spool.daemons / f"{DAEMON_ID}.json"
        deadline = time.monotonic() + 180
        while not (beat.is_file() and " serving " in self.log()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("daemon did not start:\n" + self.log()[-3000:])
            time.sleep(0.1)

    def __enter__(self) -> Site:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)
        self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tree(self) -> list[psutil.Process]:
        assert self.process is not None
        daemon = psutil.Process(self.process.pid)
        return [daemon, *daemon.children(recursive=True)]

    def drop(self, name: str, body: dict[str, Any]) -> tuple[float, float]:
        """Write beside, rename in (the recommended way); (perf_counter, time) of the rename."""
        staged = self.spool.root / f".staged-{name}"
        staged.write_text(json.dumps(body) + "\n")
        wall, t = time.time(), time.perf_counter()
        os.rename(staged, self.spool.incoming / f"{name}.yaml")
        return t, wall

    def job_dir(self, job_id: str) -> Path:
        return self.spool.jobs / job_id

    def watch_dirs(self, job_id: str) -> list[Path]:
        job = self.job_dir(job_id)
        return [self.spool.jobs, job, job / "attempts"]

    def wait_claim(self, job_id: str) -> float:
        claim = self.job_dir(job_id) / "attempts" / "1.claim"
        return wait_for(self.watch_dirs(job_id), lambda: os.path.lexists(claim))

    def wait_progress(self, job_id: str, ok: Callable[[dict[str, Any]], bool]) -> float:
        path = self.job_dir(job_id) / "progress.json"
        return wait_for(self.watch_dirs(job_id), lambda: ok(read_json(path)))

    def wait_result(self, job_id: str, timeout: float = 300) -> float:
        path = self.job_dir(job_id) / sp.RESULT
        return wait_for(self.watch_dirs(job_id), lambda: os.path.lexists(path), timeout)

    def worker_pid(self, job_id: str) -> int:
        pattern = re.compile(rf"{re.escape(job_id)}: attempt \d+ started \(pid (\d+)\)")
        deadline = time.monotonic() + 30
        while not (match := pattern.search(self.log())):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker for {job_id}:\n{self.log()[-2000:]}")
            time.sleep(0.01)
        return int(match[1])

    def wait_worker_gone(self, job_id: str) -> None:
        """So the next drop finds the slot free (the daemon reaps it in the drop's rescan)."""
        pid = self.worker_pid(job_id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(0.01)
        raise RuntimeError(f"worker of {job_id} still running")


# --- statistics ------------------------------------------------------------------------------


def spread(values: list[float], scale: float = 1000.0, digits: int = 1,
           at: tuple[int, ...] = (50, 90, 99)) -> dict[str, Any]:
    """n, min, max and the percentiles ``at`` (keys ``p50``...) of ``values`` times ``scale``."""
    a = np.asarray(values, dtype=float) * scale
    found = {f"p{q}": round(float(v), digits) for q, v in zip(at, np.percentile(a, at),
                                                               strict=True)}
    return {"n": len(a), **found, "min": round(float(a.min()), digits),
            "max": round(float(a.max()), digits)}


def fmt(s: dict[str, Any], unit: str = "ms") -> str:
    return (f"p50 {s['p50']} / p90 {s['p90']} / p99 {s['p99']} {unit} "
            f"(min {s['min']}, max {s['max']}, n {s['n']})")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# --- 1-3: drop -> claim, drop -> running, cancel -> cancelled -----------------------------------


def bench_latencies(site: Site, drops: int) -> dict[str, Any]:
    claim, claim_rec, running, cancel = [], [], [], []
    load_before = load()
    for i in range(drops):
        job_id = f"lat-{i:03d}"
        t0, wall0 = site.drop(job_id, LONG_JOB)
        claim.append(site.wait_claim(job_id) - t0)
        record = read_json(site.job_dir(job_id) / "attempts" / "1.claim")
        claim_rec.append(utc_seconds(record["claimed_at"]) - wall0)
        running.append(site.wait_progress(job_id, lambda p: p.get("state") == "running") - t0)
        site.wait_progress(job_id, lambda p: p.get("phase") == "training"
                           and (p.get("batch") or 0) >= 1)
        time.sleep(0.05 + 0.2 * (i % 5) / 5)  # land anywhere in an epoch
        t1 = time.perf_counter()
        (site.job_dir(job_id) / sp.CANCEL).touch()
        done = site.wait_result(job_id, timeout=60)
        state = read_json(site.job_dir(job_id) / sp.RESULT).get("state")
        if state != "cancelled":
            raise RuntimeError(f"{job_id} ended {state}, not cancelled")
        cancel.append(done - t1)
        site.wait_worker_gone(job_id)
        time.sleep(0.05)
        print(f"  {job_id}: claim {claim[-1] * 1e3:.1f} ms, running {running[-1] * 1e3:.1f} ms, "
              f"cancel {cancel[-1] * 1e3:.1f} ms", flush=True)
    return {"claim": spread(claim), "claim_record": spread(claim_rec),
            "running": spread(running), "cancel": spread(cancel),
            "load": f"{load_before} -> {load()}"}


def bench_back_to_back(site: Site, jobs: int) -> dict[str, Any]:
    """A queue of short jobs: result.json of one -> attempts/1.claim of the next."""
    load_before = load()
    ids = [f"b2b-{i:02d}" for i in range(jobs)]
    for job_id in ids:  # all dropped at once, FIFO
        site.drop(job_id, {**LONG_JOB, "overrides": {"training": {"epochs": 1}}})
        time.sleep(0.01)
    gaps = []
    for previous, job_id in zip(ids, ids[1:], strict=False):
        done = site.wait_result(previous)
        gaps.append(site.wait_claim(job_id) - done)
        print(f"  {previous} -> {job_id}: {gaps[-1] * 1e3:.1f} ms", flush=True)
    site.wait_result(ids[-1])
    site.wait_worker_gone(ids[-1])
    return {"gap": spread(gaps), "load": f"{load_before} -> {load()}"}


# --- 5: idle CPU ----------------------------------------------------------------------------------


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            t = process.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def idle_cpu(site: Site, seconds: float) -> dict[str, Any]:
    """Percent of one core used by the daemon, its fork server and any child, while idle."""
    time.sleep(3)  # past the first rescan's caches
    tree = site.tree()
    load_before = load()
    c0, t0 = cpu_seconds(tree), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(tree), time.monotonic()
    return {"percent": round(100 * (c1 - c0) / (t1 - t0), 3), "seconds": round(t1 - t0, 1),
            "processes": len(tree), "load": f"{load_before} -> {load()}"}


def make_jobs(site: Site, count: int, *, terminal: bool, prefix: str) -> None:
    """Accepted job folders written directly, in the format :func:`sp.finish_accept` writes
    (one real acceptance, its job.yaml copied with a new id and time)."""
    model = f"{prefix}-model"
    source = site.spool.incoming.parent / "tmp" / f"{model}.yaml"
    body = {"strategy": "rsi_minimal.yaml", "seed": 1,
            "execution": {"mode": "gpu", "wait_for_gpu": 10 ** 9}}
    folder = site.spool.jobs / model
    folder.mkdir()
    (folder / sp.SUBMITTED).write_text(json.dumps(body) + "\n")
    from ktrdr_daemon.settings import Settings
    from ktrdr_daemon.validate import validate_job

    settings = Settings(strategies=site.strategies)
    sp.finish_accept(site.spool, model, lambda b, s: validate_job(b, s, settings))
    template = (folder / sp.JOB).read_text()
    shutil.rmtree(folder)
    source.unlink(missing_ok=True)
    submitted = json.dumps(body) + "\n"
    result = json.dumps({"schema": 1, "state": "completed", "job_id": "x", "attempt": 1}) + "\n"
    for i in range(count):
        job_id = f"{prefix}-{i:05d}"
        folder = site.spool.jobs / job_id
        folder.mkdir()
        (folder / sp.SUBMITTED).write_text(submitted)
        text = template.replace(f"id: {model}", f"id: {job_id}", 1)
        (folder / sp.JOB).write_text(text)
        if terminal:
            (folder / sp.RESULT).write_text(result)


# --- 6: a big queue ------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return spread(times)


def bench_big_queue(site: Site, drops: int) -> dict[str, Any]:
    claim = []
    load_before = load()
    for i in range(drops):
        job_id = f"urgent-{i:02d}"
        t0, _ = site.drop(job_id, {**LONG_JOB, "priority": 10, "execution": {"mode": "local"}})
        claim.append(site.wait_claim(job_id) - t0)
        site.wait_progress(job_id, lambda p: p.get("state") == "running")
        (site.job_dir(job_id) / sp.CANCEL).touch()
        site.wait_result(job_id, timeout=60)
        site.wait_worker_gone(job_id)
        print(f"  {job_id}: claim {claim[-1] * 1e3:.1f} ms", flush=True)
    ls_wall = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ktrdr_daemon.cli", "ls", "--spool",
                        str(site.spool.root)], check=True, stdout=subprocess.DEVNULL, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        ls_wall.append(time.perf_counter() - t)
    from ktrdr_daemon.listing import job_rows

    judge = sp.LivenessJudge(sp.DaemonIdentity.current("bench-reader"))
    return {
        "claim": spread(claim), "ls_wall": spread(ls_wall),
        "job_rows": time_calls(lambda: job_rows(site.spool), 5),
        "list_jobs_all": time_calls(lambda: sp.list_jobs(site.spool), 5),
        "queued_in_order": time_calls(lambda: sp.queued_jobs_in_order(site.spool), 5),
        "find_reclaimable": time_calls(lambda: sp.find_reclaimable(site.spool, judge), 5),
        "load": f"{load_before} -> {load()}",
    }


# --- the report --------------------------------------------------------------------------------


FIXES = """Fixes this benchmark led to (before -> after, `--quick` runs of n 3-8 at load 8-10):

- drop -> claim p50 2,039 -> 49 ms, drop -> running p50 2,152 -> 200 ms (a2920b1): a file
  renamed into `incoming/` from outside it raises a bare IN_MOVED_TO, which watchdog reported as
  a creation, so the drop waited for the settle time and the next rescan (2 s). The watcher now
  asks for full events: such a rename is a move, complete at once.
- idle CPU with 1,000 finished jobs 4.8 % -> 1.7 % of a core (99b52fd): every rescan read every
  job folder two or three times; a folder's names (and the JobInfo they fix) are now cached by
  its inode and mtime (kept only once the folder is 1 s old, trusted 30 s at most), so a rescan is
  one lstat per job and pass.
- 1,000 queued jobs: daemon start 19.0 -> 6.3 s, first queue order 2.4 -> 0.5 s (6c0058c,
  7289e91): `ls` and the queue order read only job.yaml's spool keys, not the resolved strategy.
- a queue of short jobs: result.json of one -> claim of the next 0.45-1.79 s -> 25-66 ms
  (in 55d741c): a worker's exit makes no file event, so its slot waited for the next rescan; a
  thread now waits on the worker's sentinel and wakes the loop.
- 10,000 queued jobs: the claim loop takes execution and the cancel request from the listing
  (d9c8c9b, 3550ba1) instead of two stats per queued job and rescan.
- idle CPU with 1,000 finished jobs 1.4 % -> 0.6 % of a core (psutil, 60 s, load 0.4; a3a02b6):
  a rescan lists `jobs/` once for all its passes, and while `jobs/` itself is unchanged (new
  jobs, `clean` and `retry` all change it) it re-reads only the unfinished folders; a finished
  folder's listing is trusted 10 minutes. py-spy showed the rest: building a `pathlib.Path`
  per finished job in `find_reclaimable`, and re-listing every folder each 30 s.
- drop -> claim 14-175 ms -> 14-18 ms (10 drops in the pattern of row 1, traced; 70ad7f3):
  watchdog holds an IN_MOVED_FROM 0.5 s to pair it with its IN_MOVED_TO, and every later event
  queues behind it. Each accepted drop is such a move (`incoming/` -> `jobs/<id>/`), so a drop
  that came within half a second of the previous accept was seen up to 0.5 s late; the daemon
  needs no pairs and sets the pairing delay to 0. The same commit stops a running job's own
  progress files from waking the daemon (~20 rescans a second while training, for nothing).
- SIGTERM -> exit of an idle daemon at load 23: 4.7-5.7 s -> 1.0-1.7 s (0293b43): tearing down
  an interpreter that had imported torch took ~0.4 s of CPU, so seconds on a loaded box, out of
  the 10 s a SIGTERM allows (fault seeds 8001, 8009, 8016, 8029 exited after 10.1-11.4 s). The
  daemon no longer imports torch: the device is proven in a child of the fork server.
- drop -> claim p50 15.7 -> 11.5 ms, p99 21.2 -> 19.6 ms (full runs; 9fb3318): accepting a
  drop parsed the strategy file and wrote job.yaml with PyYAML's pure-Python safe loader and
  dumper, ~8 of its ~13 ms in process; libyaml's safe loader and dumper (the same classes in C)
  take it to 2.7 ms, a claim from 2.8 to 1.7 ms.
- drop -> running p50 53.6 -> 28.5 ms (full runs; 2a603b7, 4642aed): a claimed
  job waited 45-67 ms for its worker. The fork server's child re-ran the daemon's main module
  the way multiprocessing prepares children (its imports, ~20 ms: the CLI is now preloaded),
  `gc.freeze()` keeps a child's collections off the ~360,000 inherited objects (a full one took
  ~200 ms and 23,000 page faults), and the daemon keeps one worker forked ahead, which gets its
  task through its lifeline: claim -> the job's first event 10-14 ms.

What a job costs in the daemon against training it in process is the Daemon overhead section.
10,000 queued jobs: idle CPU 11-20 % and a claim 0.3-0.35 s over the last runs, because
unfinished folders are still stat-ed each rescan (finished ones no longer are); the rescan
pieces in the table are most of it. They vary with the machine from run to run (109 and 75 ms,
then 89 and 57 ms, for the same code), so compare them within one run only."""


def goal(ok: bool) -> str:
    return "yes" if ok else "NO"


def report(r: dict[str, Any], quick: bool) -> str:
    lat, big = r["latency"], r["big"]
    idle0, idle1, idle10 = r["idle_empty"], r["idle_1000"], r["idle_big"]
    rows = [
        f"| 1. drop -> `attempts/1.claim` seen | {fmt(lat['claim'])} | p99 <= 20 ms | "
        f"{goal(lat['claim']['p99'] <= 20)} | {lat['load']} |",
        f"| 1b. same, daemon's own `claimed_at` | {fmt(lat['claim_record'])} | | | |",
        f"| 1c. queue of short jobs: result.json of one -> claim of the next | "
        f"{fmt(r['b2b']['gap'])} | | | {r['b2b']['load']} |",
        f"| 2. drop -> `running` in progress.json | {fmt(lat['running'])} | p50 <= 150 ms | "
        f"{goal(lat['running']['p50'] <= 150)} | |",
        f"| 3. cancel marker -> result.json `cancelled` (training) | {fmt(lat['cancel'])} | "
        f"p99 <= 50 ms | {goal(lat['cancel']['p99'] <= 50)} | |",
        f"| 5. idle CPU, empty spool | {idle0['percent']} % of a core over {idle0['seconds']} s "
        f"({idle0['processes']} processes) | <= 0.5 % | {goal(idle0['percent'] <= 0.5)} | "
        f"{idle0['load']} |",
        f"| 5. idle CPU, 1,000 finished jobs | {idle1['percent']} % over {idle1['seconds']} s | "
        f"<= 0.5 % | {goal(idle1['percent'] <= 0.5)} | {idle1['load']} |",
        f"| 6. idle CPU, {r['queued']:,} queued jobs | {idle10['percent']} % over "
        f"{idle10['seconds']} s | | | {idle10['load']} |",
        f"| 6. drop -> claim, priority 10, {r['queued']:,} queued | {fmt(big['claim'])} | | | "
        f"{big['load']} |",
        f"| 6. `ktrdr-daemon ls` wall time (process start included) | {fmt(big['ls_wall'])} "
        "| | | |",
        f"| 6. `listing.job_rows` (what `ls` does, in process) | {fmt(big['job_rows'])} | | | |",
        f"| 6. rescan piece `queued_jobs_in_order` | {fmt(big['queued_in_order'])} | | | |",
        f"| 6. rescan piece `find_reclaimable` | {fmt(big['find_reclaimable'])} | | | |",
    ]
    return table_section(HEADING, (
        f"`python -m bench.bench_daemon{' --quick' if quick else ''}`: one `ktrdr-daemon run` "
        "(CPU, 1 slot, default timings: rescan and heartbeat every 2 s) on a fresh spool on "
        f"{r['fs']}; times are taken by the bench process when inotify shows it the file "
        "(never earlier than a user could see it). Drops are renamed into `incoming/`; jobs 1-3 "
        "are rsi_minimal with 200 epochs at batch 16, cancelled once training runs (a job's cost "
        "against training it in process: the Daemon overhead section). Idle CPU is "
        "user + system time of the daemon, its fork server and their children (psutil). "
        f"The {r['queued']:,} queued jobs need a GPU (`mode: gpu`, `wait_for_gpu`), so the CPU "
        "daemon scans them every rescan and runs none. Spreads are p50 / p90 / p99 (min, max, n)."
        f" Load average (1/5/15 min) per phase at start -> end; 2 cores shared with other "
        f"work. Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}."
    ), rows, FIXES)


def main() -> None:
    args = parse_args(__doc__)
    drops, idle_s, queued, urgent, b2b = (
        (8, 15.0, 1_000, 3, 4) if args.quick else (50, 60.0, 10_000, 10, 8))
    r: dict[str, Any] = {"queued": queued}
    base = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    import watchdog  # noqa: F401  (fail early when the environment lacks it)

    from ktrdr_daemon.watcher import filesystem_type

    r["fs"] = filesystem_type(base) or "an unknown filesystem"
    try:
        with Site(base / "a") as site:
            print(f"idle, empty spool ({idle_s:.0f} s); load {load()}", flush=True)
            r["idle_empty"] = idle_cpu(site, idle_s)
            print(f"  {r['idle_empty']}", flush=True)
            print(f"1-3. {drops} drops: claim, running, cancel; load {load()}", flush=True)
            r["latency"] = bench_latencies(site, drops)
            print(f"1c. back to back, {b2b} short jobs; load {load()}", flush=True)
            r["b2b"] = bench_back_to_back(site, b2b)
        site = Site(base / "b")
        make_jobs(site, 1_000, terminal=True, prefix="done")
        with site:
            print(f"5. idle, 1,000 finished jobs ({idle_s:.0f} s); load {load()}", flush=True)
            r["idle_1000"] = idle_cpu(site, idle_s)
            print(f"  {r['idle_1000']}", flush=True)
        site = Site(base / "c")
        t = time.perf_counter()
        make_jobs(site, queued, terminal=False, prefix="gpu")
        print(f"6. {queued:,} queued jobs written in {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        with site:
            print(f"   daemon serving after {time.perf_counter() - t:.1f} s", flush=True)
            r["idle_big"] = idle_cpu(site, idle_s / 2)
            print(f"  {r['idle_big']}", flush=True)
            r["big"] = bench_big_queue(site, urgent)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    publish(HEADING, report(r, args.quick), args)


if __name__ == "__main__":
    main()
