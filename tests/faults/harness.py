"""Fault harness: real daemons on a real spool, faults at random points of a job's life.

One *trial* drops two small jobs into a spool served by a pool of two daemons (one slot each),
waits until the first job reaches a randomly chosen point (claim, data loading, training, a
checkpoint write, model saving, result writing: read from the job's own files), waits a random
delay more, and then hurts the daemon that owns it:

    sigkill   SIGKILL of the owner daemon (its worker is left to notice), then a restart
    sigstop   SIGSTOP of the owner, SIGCONT after T_expire plus a little (the owner wakes up
              to find its job reclaimed)
    sigterm   SIGTERM of the owner: it must hand back and exit 0 within 10 s; then a restart
    second    another daemon started mid-way (sometimes a second copy of the owner's own id,
              which must exit with a message); it joins, then leaves by SIGTERM
    publish   the owner's worker frozen (SIGSTOP) the moment its version is in the store, the
              job cancelled or not (a coin), the worker SIGKILLed: the job must complete with
              that version, or end cancelled with the version withdrawn (publish, then result)
    misuse    while the job runs: a queued job's job.yaml hand-edited (priority: high), a FIFO
              and a folder dropped as x.yaml, spool/tmp removed; each decoy must end failed,
              and the daemons keep serving

Then every job of the trial is checked against the spool's promises (spec section 3), see
:func:`check_job`. A monitor thread polls the daemons' process trees (psutil) every few
milliseconds to see worker lifetimes: two workers of one job alive at the same instant is an
overlap, and every process a dead daemon left behind must be gone within seconds.

    python -m tests.faults.harness --kind sigkill --trials 200 --seed 1
    python -m tests.faults.harness --kind all --trials 200          # make faults

Trial ``i`` uses seed ``S + i``; the seed fixes the point, the delay, the job sizes and the
fault's options. Timing on a shared machine is not reproducible, so repeating a seed repeats the
scenario, not the exact interleaving.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
RSI_MINIMAL = REPO / "config" / "strategies" / "rsi_minimal.yaml"

# Short coordination timings: many trials a minute. Fence < expire, as the spec requires.
HEARTBEAT_S, EXPIRE_S, FENCE_S, RESCAN_S = 0.15, 1.5, 0.7, 0.2
TIMINGS = {
    "KTRDR_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
    "KTRDR_EXPIRE_SECONDS": str(EXPIRE_S),
    "KTRDR_FENCE_SECONDS": str(FENCE_S),
    "KTRDR_RESCAN_SECONDS": str(RESCAN_S),
    "KTRDR_CANCEL_GRACE_SECONDS": "2",
    # A checkpoint after every batch (the default takes one at most every 30 s): check_job's
    # invariant, a job logged at epoch e resumes from e - 1 or later, holds exactly.
    "KTRDR_CHECKPOINT_SECONDS": "0",
}
KINDS = ("sigkill", "sigstop", "sigterm", "second")  # faults of the daemons
ATTACKS = ("publish", "misuse")  # faults of the protocol's users and of one worker (issue 16)
POINTS = ("claim", "data", "training", "checkpoint", "publish", "result")
# pipeline.store.FILES (not imported: that would import torch into the harness)
STORE_FILES = ("model.pt", "config.json", "metrics.json", "features.json", "metadata.json",
               "metadata_v3.json", "model_full.pt")
MAX_ATTEMPTS = 6  # starved daemons on a loaded box may fence spuriously; that is allowed
START_TIMEOUT_S = 180.0  # torch imports on a busy 2-core machine
JOB_TIMEOUT_S = 240.0
ORPHAN_GRACE_S = 10.0
_VERSION = re.compile(r"[A-Za-z0-9]+_v\d+")
# The daemon's log line (asctime, local time) for each attempt it starts: a worker may be
# forked ahead of its job (a spare), so it runs attempt n only from this line on.
_STARTED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3}) \S+ (\S+): attempt (\d+) "
                      r"started \(pid (\d+)\)", re.MULTILINE)


def job_text(epochs: int, *, seed: int = 7, batch_size: int = 16,
             max_attempts: int = MAX_ATTEMPTS) -> str:
    body = {"strategy": "rsi_minimal.yaml", "seed": seed,
            "overrides": {"training": {"epochs": epochs, "batch_size": batch_size}},
            "execution": {"max_attempts": max_attempts}}
    return json.dumps(body) + "\n"  # JSON is YAML


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- a spool and its daemons ------------------------------------------------------------------


class Site:
    """A spool, a model store and a strategies root under one folder."""

    def __init__(self, root: Path, spool: Path | None = None, models: Path | None = None):
        self.root = root
        self.spool = spool or root / "spool"
        self.models = models or root / "models"
        self.strategies = root / "strategies"
        self.runtime = root / "run"  # XDG_RUNTIME_DIR: the daemons' instance locks
        for folder in (self.spool / "incoming", self.models, self.strategies, self.runtime):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(RSI_MINIMAL, self.strategies / RSI_MINIMAL.name)

    def drop(self, name: str, data: str | bytes) -> None:
        """The recommended way: write beside the spool, rename into ``incoming/``."""
        staged = self.spool / f".staged-{secrets.token_hex(4)}"
        staged.write_bytes(data.encode() if isinstance(data, str) else data)
        os.rename(staged, self.spool / "incoming" / name)

    def job_dir(self, job_id: str) -> Path:
        return self.spool / "jobs" / job_id

    def result(self, job_id: str) -> dict[str, Any] | None:
        return read_json(self.job_dir(job_id) / "result.json")

    def progress(self, job_id: str) -> dict[str, Any]:
        return read_json(self.job_dir(job_id) / "progress.json") or {}

    def events(self, job_id: str) -> list[dict[str, Any]]:
        try:
            lines = (self.job_dir(job_id) / "events.jsonl").read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def versions(self) -> list[Path]:
        return sorted(p for p in self.models.glob("*/*_v*") if p.is_dir()
                      and not p.name.startswith(".") and not p.parent.name.startswith("."))


class Daemon:
    """``ktrdr-daemon run`` in its own process group; a restart appends to the same log."""

    def __init__(self, site: Site, daemon_id: str, *, slots: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.site, self.daemon_id, self.slots = site, daemon_id, slots
        self.extra_env = env or {}
        self.log_path = site.root / f"daemon-{daemon_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.offset = 0
        self.started_at = 0.0

    def start(self) -> Daemon:
        s = self.site
        env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
        env.update(TIMINGS)
        env.update(KTRDR_CONFIG=str(s.root / "no-daemon.yaml"), XDG_RUNTIME_DIR=str(s.runtime),
                   PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), **self.extra_env)
        command = [sys.executable, "-m", "ktrdr_daemon.cli", "run", "--spool", str(s.spool),
                   "--models", str(s.models), "--strategies", str(s.strategies),
                   "--daemon-id", self.daemon_id, "--slots", str(self.slots), "--device", "cpu"]
        with open(self.log_path, "ab") as log:
            self.offset = log.tell()
            self.process = subprocess.Popen(command, cwd=s.root, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self, whole: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0 if whole else self.offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def ready(self) -> bool:
        return self.alive() and " serving " in self.log_text()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            if not self.alive():
                return False
            time.sleep(0.05)
        return False

    def send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            assert self.process is not None
            self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """Cleanup only: the daemon and whatever is left in its process group."""
        if self.process is None:
            return
        for signum in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def worker_pids(self) -> dict[int, tuple[str, int, float]]:
        """pid -> (job id, attempt, wall time it started), from the daemon's ``<job>: attempt n
        started (pid P)`` log lines."""
        return {int(m[5]): (m[3], int(m[4]), time.mktime(time.strptime(m[1], "%Y-%m-%dT%H:%M:%S"))
                            + int(m[2]) / 1000)
                for m in _STARTED.finditer(self.log_text(whole=True))}


@dataclass
class Snapshot:
    """Processes alive together from ``first`` to ``last`` (wall clock, like the logs)."""

    first: float
    last: float
    alive: frozenset[int]


class Monitor:
    """Polls every daemon's process tree: who was alive together, and who outlived whom."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.daemons: list[Daemon] = []
        self.known: dict[int, psutil.Process] = {}  # every descendant ever seen
        self.parent_of: dict[int, int] = {}  # descendant pid -> daemon pid
        # Alive sets of 2+ descendants, each with the wall times it was first and last seen.
        self.snapshots: list[Snapshot] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def watch(self, daemon: Daemon) -> None:
        with self.lock:
            self.daemons.append(daemon)

    def take_snapshots(self) -> list[Snapshot]:
        with self.lock:
            snaps, self.snapshots = self.snapshots, []
        return snaps

    def _run(self) -> None:
        last: frozenset[int] = frozenset()
        while not self._stop.wait(self.interval):
            with self.lock:
                daemons = [d for d in self.daemons if d.process is not None]
            for d in daemons:
                try:
                    children = psutil.Process(d.pid).children(recursive=True)
                except psutil.Error:
                    continue
                for child in children:
                    if child.pid not in self.known:
                        self.known[child.pid] = child
                        self.parent_of[child.pid] = d.pid
            alive = frozenset(pid for pid, p in list(self.known.items()) if _running(p))
            now = time.time()
            with self.lock:
                if alive != last:
                    last = alive
                    if len(alive) >= 2:
                        self.snapshots.append(Snapshot(now, now, alive))
                elif len(alive) >= 2 and self.snapshots:
                    self.snapshots[-1].last = now

    def left_behind(self, daemon_pid: int) -> list[int]:
        """Descendants of that (dead) daemon process still running."""
        return [pid for pid, p in list(self.known.items())
                if self.parent_of.get(pid) == daemon_pid and _running(p)]

    def all_left(self) -> list[int]:
        return [pid for pid, p in list(self.known.items()) if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- the invariants ----------------------------------------------------------------------------


@dataclass
class JobOutcome:
    job_id: str
    state: str | None
    attempts: int
    versions: int
    resumed: bool
    violations: list[str] = field(default_factory=list)


def check_job(site: Site, job_id: str, max_attempts: int = MAX_ATTEMPTS,
              first_result: bytes | None = None) -> JobOutcome:
    """One job against the spec: one terminal result, at most one version (the result's),
    attempts within the budget, and every reclaimed attempt resumed from the checkpoint."""
    bad: list[str] = []
    job_dir = site.job_dir(job_id)
    result_path = job_dir / "result.json"
    result = read_json(result_path)
    state = None if result is None else result.get("state")
    if result is None:
        bad.append("no result.json")
    elif state not in ("completed", "failed", "cancelled"):
        bad.append(f"result.json state {state!r} is not terminal")
    if first_result is not None and result_path.exists() and \
            result_path.read_bytes() != first_result:
        bad.append("result.json changed after it was first written")
    mine = [v for v in site.versions()
            if (read_json(v / "metadata.json") or {}).get("job_id") == job_id]
    if len(mine) > 1:
        bad.append(f"{len(mine)} model versions: {[str(v) for v in mine]}")
    if state == "completed":
        if [str(v) for v in mine] != [str(result.get("model_path"))]:
            bad.append(f"completed with model_path {result.get('model_path')} but versions "
                       f"{[str(v) for v in mine]}")
    elif mine:
        bad.append(f"{state} but a version was published: {[str(v) for v in mine]}")
    attempts_dir = job_dir / "attempts"
    names = os.listdir(attempts_dir) if attempts_dir.is_dir() else []
    claims = sorted(int(n.split(".")[0]) for n in names if n.endswith(".claim"))
    ends = {int(n.split(".")[0]): read_json(attempts_dir / n) or {}
            for n in names if n.endswith(".end")}
    counted = sum(1 for e in ends.values() if e.get("counts", True))
    if counted > max_attempts:
        bad.append(f"{counted} counted attempts > max_attempts {max_attempts}")
    if claims and claims != list(range(1, len(claims) + 1)):
        bad.append(f"attempt numbers not 1..n: {claims}")
    if result is not None and claims and result.get("attempt") != claims[-1]:
        bad.append(f"result names attempt {result.get('attempt')}, last claim is {claims[-1]}")
    for n in claims[:-1]:
        if n not in ends:
            bad.append(f"attempt {n} has no end but attempt {n + 1} was claimed")
    resumed = False
    max_epoch, starts = 0, 0
    for event in site.events(job_id):
        if event.get("type") == "epoch":
            max_epoch = max(max_epoch, int(event.get("epoch") or 0))
        elif event.get("type") == "state" and event.get("state") == "running":
            starts += 1
            if starts == 1 or "resumed_from_epoch" not in event:
                continue  # the first attempt, or one that found the model already published
            epoch = event.get("resumed_from_epoch")
            resumed = resumed or epoch is not None
            # The checkpoint of epoch e is written right after epoch e's event: an attempt that
            # saw epoch e logged must resume from e - 1 or later.
            if max_epoch >= 2 and (epoch is None or epoch < max_epoch - 1):
                bad.append(f"attempt start {starts} resumed from {epoch} although epoch "
                           f"{max_epoch} had been logged (checkpoint lost?)")
    return JobOutcome(job_id, state, len(claims), len(mine), resumed, bad)


def check_store(site: Site) -> list[str]:
    """Every visible version folder is whole; unfinished work lives only in ``.staging``."""
    bad = []
    for version in site.versions():
        missing = [f for f in STORE_FILES if not (version / f).is_file()]
        if missing:
            bad.append(f"partial version {version}: missing {missing}")
    for strategy in site.models.iterdir() if site.models.is_dir() else []:
        if strategy.name.startswith(".") or not strategy.is_dir():
            continue  # .staging: where unfinished versions (and crash litter) belong
        for entry in strategy.iterdir():
            if entry.is_dir() and not entry.is_symlink() and not _VERSION.fullmatch(entry.name):
                bad.append(f"a folder beside the versions that is not one: {entry}")
    return bad


def check_overlap(snapshots: list[Snapshot], workers: dict[int, tuple[str, int, float]]
                  ) -> list[str]:
    """Two workers of one job alive in the same poll, both past their start = two attempts
    running at once."""
    bad = set()
    for snapshot in snapshots:
        by_job: dict[str, list[int]] = {}
        for pid in snapshot.alive:
            if pid in workers and workers[pid][2] <= snapshot.last:
                job, attempt, _started = workers[pid]
                by_job.setdefault(job, []).append(attempt)
        for job, attempts in by_job.items():
            if len(attempts) > 1:
                bad.add(f"{job}: attempts {sorted(attempts)} alive at once")
    return sorted(bad)


# -- trials --------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    kind: str
    seed: int
    point: str
    landed: str  # the phase the target job was in when the fault hit
    jobs: list[JobOutcome]
    violations: list[str]
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "point": self.point,
                "landed": self.landed, "seconds": round(self.seconds, 1),
                "states": [j.state for j in self.jobs],
                "attempts": [j.attempts for j in self.jobs],
                "versions": [j.versions for j in self.jobs],
                "resumed": [j.resumed for j in self.jobs], "violations": self.violations}


class Pool:
    """The daemons of one harness run on one site; killed ones are restarted."""

    def __init__(self, site: Site, monitor: Monitor, size: int = 2, prefix: str = "d") -> None:
        self.site, self.monitor = site, monitor
        self.daemons = [Daemon(site, f"{prefix}{i}") for i in range(size)]
        self.extra: list[Daemon] = []
        self.dead_pids: list[tuple[int, float]] = []  # (pid, when it died) for orphan checks

    def all(self) -> list[Daemon]:
        return self.daemons + self.extra

    def by_id(self, daemon_id: str) -> Daemon | None:
        return next((d for d in self.daemons if d.daemon_id == daemon_id), None)

    def ensure(self) -> None:
        for d in self.daemons:
            if not d.alive():
                if d.process is not None:
                    self.dead_pids.append((d.pid, time.monotonic()))
                d.start()
                self.monitor.watch(d)

    def wait_any_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(d.ready() for d in self.daemons):
                return True
            time.sleep(0.05)
        return False

    def orphans(self) -> list[str]:
        """Processes of daemons dead for over the grace period that are still running."""
        bad, keep = [], []
        now = time.monotonic()
        for pid, died in self.dead_pids:
            left = self.monitor.left_behind(pid)
            if left and now - died > ORPHAN_GRACE_S:
                bad.append(f"daemon pid {pid} died {now - died:.0f} s ago; its processes "
                           f"{left} still run")
            elif left:
                keep.append((pid, died))
        self.dead_pids = keep
        return bad

    def workers(self) -> dict[int, tuple[str, int, float]]:
        found: dict[int, tuple[str, int, float]] = {}
        for d in self.all():
            found.update(d.worker_pids())
        return found

    def stop(self) -> list[str]:
        """SIGTERM everything, then make sure nothing any daemon started is still running."""
        bad = []
        for d in self.all():
            if d.alive():
                d.send(signal.SIGCONT)
                d.send(signal.SIGTERM)
        for d in self.all():
            if d.process is not None and d.alive() and d.wait_exit(15) is None:
                bad.append(f"daemon {d.daemon_id} ignored SIGTERM for 15 s")
                d.kill_group()
            if d.process is not None:
                self.dead_pids.append((d.pid, time.monotonic()))
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while self.monitor.all_left() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.monitor.all_left()
        if left:
            bad.append(f"processes left after every daemon stopped: "
                       f"{[(p, _cmd(p)) for p in left]}")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return bad


def _cmd(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:80]
    except psutil.Error:
        return "?"


def _wait(predicate: Any, timeout: float, interval: float = 0.003) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def wait_point(site: Site, job_id: str, point: str, timeout: float) -> str:
    """Wait until the job reaches ``point``; returns what it reached ("ended" if it beat us)."""
    job_dir = site.job_dir(job_id)
    checkpoint = job_dir / "checkpoint" / "last.pt"
    steps = {"data": 1, "training": 8, "publish": 11, "result": 12}

    def stamp() -> int | None:
        with contextlib.suppress(OSError):
            return checkpoint.stat().st_mtime_ns
        return None

    first = stamp()

    def reached() -> str | None:
        if (job_dir / "result.json").exists():
            return "ended"
        if point == "claim":
            return "claim"
        if point == "checkpoint":
            return "checkpoint" if stamp() not in (None, first) else None
        progress = site.progress(job_id)
        step = progress.get("step") or 0
        if progress.get("state") == "running" and step >= steps[point]:
            return f"step {step}"
        return None

    return _wait(reached, timeout) or "timeout"


def run_trial(pool: Pool, kind: str, seed: int) -> TrialResult:
    site, rng, started = pool.site, random.Random(seed), time.monotonic()
    point, delay = rng.choice(POINTS), rng.uniform(0.0, 0.3)
    long = kind == "second"  # the late joiner needs seconds to import torch
    target, other = f"{kind}{seed}-a", f"{kind}{seed}-b"
    violations: list[str] = []
    pool.ensure()
    if not pool.wait_any_ready():
        return TrialResult(kind, seed, point, "no daemon", [], ["no daemon became ready"], 0.0)
    pool.monitor.take_snapshots()
    epochs = rng.randint(12, 24) if long else rng.randint(3, 6)
    site.drop(f"{target}.yaml", job_text(epochs, seed=rng.randint(1, 99)))
    site.drop(f"{other}.yaml", job_text(2, seed=rng.randint(1, 99)))
    claim = _wait(lambda: read_json(site.job_dir(target) / "attempts" / "1.claim")
                  or site.result(target), JOB_TIMEOUT_S)
    landed = "no claim"
    if claim is None or "state" in claim:
        violations.append(f"the target job was never claimed: {claim}")
        claim = None
    elif kind == "publish":
        point, cancelled = "publish", rng.random() < 0.5
        landed = freeze_after_publish(pool, target, cancelled)
    else:
        if kind == "misuse":
            decoys = start_misuse(site, seed)
        landed = wait_point(site, target, point, JOB_TIMEOUT_S)
        time.sleep(delay)
        if site.result(target) is not None:
            landed = "ended"
        owner = pool.by_id(claim.get("daemon", ""))
        if owner is None:
            violations.append(f"claimed by an unknown daemon {claim.get('daemon')}")
        else:
            violations += inject(pool, owner, kind, rng)
        if kind == "misuse":
            violations += check_misuse(site, decoys)
    results: dict[str, bytes] = {}

    def ended() -> bool:
        for job in (target, other):
            path = site.job_dir(job) / "result.json"
            if job not in results and path.exists():
                with contextlib.suppress(OSError):
                    results[job] = path.read_bytes()
        return len(results) == 2

    if not _wait(ended, JOB_TIMEOUT_S, 0.02):
        violations.append(f"jobs not ended after {JOB_TIMEOUT_S:.0f} s: "
                          f"{sorted({target, other} - set(results))}")
    workers = pool.workers()
    mine = [pid for pid, (job, _, _) in workers.items() if job in (target, other)]
    if not _wait(lambda: not [p for p in mine if p in pool.monitor.known
                              and _running(pool.monitor.known[p])], ORPHAN_GRACE_S, 0.05):
        violations.append(f"workers still running {ORPHAN_GRACE_S:.0f} s after the jobs "
                          f"ended: {mine}")
    violations += end_extra(pool)
    outcomes = [check_job(site, job, first_result=results.get(job)) for job in (target, other)]
    for outcome in outcomes:
        violations += [f"{outcome.job_id}: {v}" for v in outcome.violations]
    violations += check_overlap(pool.monitor.take_snapshots(), pool.workers())
    violations += check_store(site)
    violations += pool.orphans()
    for d in pool.daemons:
        if d.process is not None and not d.alive() and d.process.returncode not in (0, -9):
            violations.append(f"daemon {d.daemon_id} exited with {d.process.returncode}")
    return TrialResult(kind, seed, point, landed, outcomes, violations,
                       time.monotonic() - started)


def freeze_after_publish(pool: Pool, job_id: str, cancel: bool) -> str:
    """SIGSTOP the job's worker as soon as its version is in the store (busy polling), cancel
    the job or not, SIGKILL the worker. Returns where it landed."""
    site = pool.site

    def version() -> bool:
        for parent in site.models.glob("[!.]*"):
            with contextlib.suppress(OSError):
                for entry in os.scandir(parent):
                    if "_v" in entry.name and entry.is_dir(follow_symlinks=False):
                        meta = read_json(Path(entry.path) / "metadata.json") or {}
                        if meta.get("job_id") == job_id:
                            return True
        return False

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not version():
        if site.result(job_id) is not None or time.monotonic() > deadline:
            return "ended"
    mine = [(attempt, pid) for pid, (job, attempt, _) in pool.workers().items() if job == job_id]
    if not mine:
        return "no worker"
    pid = max(mine)[1]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    landed = "ended" if site.result(job_id) is not None else "published, no result"
    if cancel:
        (site.job_dir(job_id) / "cancel").touch()
        landed += ", cancelled"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return landed


def start_misuse(site: Site, seed: int) -> dict[str, str]:
    """Decoys that must each end failed, by name -> the words their error must hold."""
    edited = f"misuse{seed}-edited"
    site.drop(f"{edited}.yaml", json.dumps({
        "strategy": "rsi_minimal.yaml", "execution": {"mode": "gpu", "wait_for_gpu": 3600}}))
    os.mkfifo(site.spool / "incoming" / f"misuse{seed}-fifo.yaml")
    (site.spool / "incoming" / f"misuse{seed}-dir.yaml").mkdir()
    job_yaml = site.job_dir(edited) / "job.yaml"
    _wait(job_yaml.exists, 30)
    with contextlib.suppress(OSError):
        text = job_yaml.read_text().replace("priority: 0", "priority: high")
        staged = job_yaml.with_name(".job.yaml.swp")
        staged.write_text(text)
        os.replace(staged, job_yaml)
    shutil.rmtree(site.spool / "tmp", ignore_errors=True)
    return {edited: "priority", f"misuse{seed}-fifo": "named pipe",
            f"misuse{seed}-dir": "directory"}


def check_misuse(site: Site, decoys: dict[str, str]) -> list[str]:
    bad = []
    for job_id, words in decoys.items():
        result = _wait(lambda j=job_id: site.result(j), 60)
        if result is None:
            bad.append(f"{job_id}: no outcome")
        elif result.get("state") != "failed" or words not in str(result.get("error")):
            bad.append(f"{job_id}: {result.get('state')} {result.get('error')} (expected failed, "
                       f"{words!r})")
    return bad


def inject(pool: Pool, owner: Daemon, kind: str, rng: random.Random) -> list[str]:
    """Hurt the owner daemon; returns violations seen while doing it."""
    bad: list[str] = []
    if kind == "sigkill":
        owner.send(signal.SIGKILL)
        owner.wait_exit(10)
        pool.ensure()  # the same id comes back (its instance lock died with it)
    elif kind == "sigstop":
        owner.send(signal.SIGSTOP)
        time.sleep(EXPIRE_S + rng.uniform(0.1, 1.0))
        owner.send(signal.SIGCONT)
    elif kind == "sigterm":
        began = time.monotonic()
        owner.send(signal.SIGTERM)
        code = owner.wait_exit(15)
        took = time.monotonic() - began
        if code != 0 or took > 10.0:
            bad.append(f"SIGTERM: daemon {owner.daemon_id} exit {code} after {took:.1f} s "
                       "(spec: exit within 10 s)")
            if code is None:
                owner.kill_group()
        pool.ensure()
    elif kind == "second":
        if rng.random() < 0.25:  # a second copy of the owner's own id must refuse to start
            twin = Daemon(pool.site, owner.daemon_id).start()
            pool.monitor.watch(twin)
            code = twin.wait_exit(START_TIMEOUT_S)
            if code in (None, 0) or "already running" not in twin.log_text():
                bad.append(f"a second copy of {owner.daemon_id} exited {code} without saying "
                           "it is already running")
                twin.kill_group()
        else:
            late = Daemon(pool.site, f"late{secrets.token_hex(2)}").start()
            pool.monitor.watch(late)
            pool.extra.append(late)
    return bad


def end_extra(pool: Pool) -> list[str]:
    """The late joiners of kind ``second`` must have served, then leave cleanly on SIGTERM."""
    bad = []
    for d in pool.extra:
        if not d.wait_ready():
            bad.append(f"late daemon {d.daemon_id} never served:\n{d.log_text()[-800:]}")
        began = time.monotonic()
        d.send(signal.SIGTERM)
        code = d.wait_exit(15)
        if code != 0 or time.monotonic() - began > 10.0:
            bad.append(f"late daemon {d.daemon_id} exit {code} after SIGTERM")
            d.kill_group()
        pool.dead_pids.append((d.pid, time.monotonic()))
    pool.extra = []
    return bad


# -- running many trials and the table -----------------------------------------------------------


def run_kinds(kinds: tuple[str, ...], trials: int, seed: int, root: Path,
              out: Path | None = None, echo: bool = True) -> list[TrialResult]:
    """``trials`` trials of each kind (interleaved) on one site with one pool of daemons."""
    site = Site(root / "-".join(kinds))
    monitor = Monitor()
    monitor.start()
    pool = Pool(site, monitor)
    results: list[TrialResult] = []
    try:
        for i in range(trials * len(kinds)):
            kind = kinds[i % len(kinds)]
            trial = run_trial(pool, kind, seed + i // len(kinds))
            results.append(trial)
            if out is not None:
                with open(out, "a") as handle:
                    handle.write(json.dumps(trial.summary()) + "\n")
            if echo:
                flag = "VIOLATION " + "; ".join(trial.violations) if trial.violations else "ok"
                print(f"{kind} seed {trial.seed}: point {trial.point} landed {trial.landed} "
                      f"states {[j.state for j in trial.jobs]} attempts "
                      f"{[j.attempts for j in trial.jobs]} {trial.seconds:.1f}s {flag}",
                      flush=True)
    finally:
        final = pool.stop()
        monitor.stop()
    if final:
        results.append(TrialResult("+".join(kinds), -1, "end", "stop", [], final, 0.0))
        if echo:
            print(f"at the end: VIOLATION {final}", flush=True)
    return results


def table(results: list[TrialResult]) -> str:
    rows = ["| fault | trials | jobs | exactly-once | completed | failed | resumed from a "
            "checkpoint | duplicate versions | violations (seeds) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for kind in dict.fromkeys(r.kind for r in results):
        mine = [r for r in results if r.kind == kind]
        trials = [r for r in mine if r.seed >= 0]
        jobs = [j for r in trials for j in r.jobs]
        once = sum(1 for j in jobs if not j.violations and j.state is not None)
        states = Counter(j.state for j in jobs)
        bad_seeds = [str(r.seed) if r.seed >= 0 else "end" for r in mine if r.violations]
        rows.append(f"| {kind} | {len(trials)} | {len(jobs)} | {once} | "
                    f"{states['completed']} | {states['failed']} | "
                    f"{sum(j.resumed for j in jobs)} | {sum(j.versions > 1 for j in jobs)} | "
                    f"{len(bad_seeds)}{' (' + ', '.join(bad_seeds) + ')' if bad_seeds else ''} |")
    landed = Counter(f"{r.point}->{'ended' if r.landed == 'ended' else 'hit'}"
                     for r in results if r.seed >= 0)
    rows.append("")
    rows.append("points (chosen -> the fault hit a live job, or the job had ended): "
                + ", ".join(f"{k} {v}" for k, v in sorted(landed.items())))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.harness",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=(*KINDS, *ATTACKS, "all"), default="all")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", help="work folder (default: a fresh temporary one)")
    parser.add_argument("--out", help="append one JSON line per trial to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="ktrdr-faults-"))
    kinds = (*KINDS, *ATTACKS) if args.kind == "all" else (args.kind,)
    results: list[TrialResult] = []
    try:
        for kind in kinds:  # one pool per kind: a kind's trials do not inherit another's state
            results += run_kinds((kind,), args.trials, args.seed, root,
                                 Path(args.out) if args.out else None)
    finally:
        if not args.keep and not args.root:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    for r in results:
        for v in r.violations:
            print(f"violation {r.kind} seed {r.seed}: {v}")
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
