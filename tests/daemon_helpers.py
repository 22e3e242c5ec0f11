"""Real daemons in real processes, for ``tests/test_daemon.py``.

A :class:`Site` is one spool with its own model store and strategies root; a
:class:`DaemonProcess` is ``ktrdr-daemon run`` started on a site with short coordination timings
(environment variables, as an operator would set them). Every wait has a timeout and fails with
the job's log tail and the daemons' logs, so a hung test says where it hung.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
RSI_MINIMAL = REPO / "config" / "strategies" / "rsi_minimal.yaml"

# Short timings: a heartbeat every 0.2 s, a silent owner is dead after 5 s, an owner that could
# not beat for 3 s fences itself. Fence and expire leave margin for a 2-core machine under a
# load of 20+, where a daemon's heartbeat thread was seen to wait 1.5 s for a CPU.
TIMINGS = {
    "KTRDR_HEARTBEAT_SECONDS": "0.2",
    "KTRDR_EXPIRE_SECONDS": "5",
    "KTRDR_FENCE_SECONDS": "3",
    "KTRDR_RESCAN_SECONDS": "0.2",
    "KTRDR_CANCEL_GRACE_SECONDS": "3",
    # Several checkpoints an epoch (the default, 30 s, would take none before a test's
    # SIGKILL): a job killed after epoch e has a checkpoint of epoch e to resume from.
    "KTRDR_CHECKPOINT_SECONDS": "0.1",
}
EXPIRE_S = float(TIMINGS["KTRDR_EXPIRE_SECONDS"])
START_TIMEOUT_S = 90.0  # importing torch in the daemon and its fork server, on a busy machine


def job_yaml(epochs: int = 2, *, seed: int = 7, batch_size: int | None = None,
             strategy: str = "rsi_minimal.yaml", **execution: Any) -> str:
    """A job file for the rsi_minimal strategy; ``execution`` keys go under ``execution:``."""
    training: dict[str, Any] = {"epochs": epochs}
    if batch_size is not None:
        training["batch_size"] = batch_size
    body: dict[str, Any] = {"strategy": strategy, "seed": seed,
                            "overrides": {"training": training}}
    if execution:
        body["execution"] = execution
    return json.dumps(body) + "\n"  # JSON is YAML


def long_job(epochs: int = 200, **execution: Any) -> str:
    """A job that trains long enough to be interrupted (~1 s an epoch at batch 16)."""
    return job_yaml(epochs, batch_size=16, **execution)


@dataclass
class Site:
    """A spool, a model store and a strategies root under one folder."""

    root: Path
    daemons: list[DaemonProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spool = self.root / "spool"
        self.models = self.root / "models"
        self.strategies = self.root / "strategies"
        self.runtime = self.root / "run"  # XDG_RUNTIME_DIR: where the instance locks live
        for folder in (self.spool / "incoming", self.models, self.strategies, self.runtime):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(RSI_MINIMAL, self.strategies / RSI_MINIMAL.name)

    # -- what a user does ------------------------------------------------------------------
    def drop(self, name: str, data: str | bytes) -> str:
        """Drop ``name`` the recommended way (write beside, rename in); returns the job id."""
        staged = self.spool / f".staged-{name}-{secrets.token_hex(3)}"
        staged.write_bytes(data.encode() if isinstance(data, str) else data)
        os.rename(staged, self.spool / "incoming" / name)
        return name.rsplit(".", 1)[0]

    def cancel(self, job_id: str) -> None:
        (self.job_dir(job_id) / "cancel").touch()

    # -- what a user reads -----------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.spool / "jobs" / job_id

    def result(self, job_id: str) -> dict[str, Any] | None:
        return _json(self.job_dir(job_id) / "result.json")

    def progress(self, job_id: str) -> dict[str, Any]:
        return _json(self.job_dir(job_id) / "progress.json") or {}

    def log(self, job_id: str) -> str:
        try:
            return (self.job_dir(job_id) / "log.txt").read_text()
        except OSError:
            return ""

    def events(self, job_id: str) -> list[dict[str, Any]]:
        try:
            lines = (self.job_dir(job_id) / "events.jsonl").read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def attempt_files(self, job_id: str) -> list[str]:
        folder = self.job_dir(job_id) / "attempts"
        return sorted(os.listdir(folder)) if folder.is_dir() else []

    def attempt_end(self, job_id: str, n: int) -> dict[str, Any] | None:
        return _json(self.job_dir(job_id) / "attempts" / f"{n}.end")

    def versions(self, job_id: str | None = None) -> list[Path]:
        """Published model versions (``<strategy>/<tf>_v<n>``), or those of one job."""
        found = sorted(p for p in self.models.glob("*/*_v*")  # not models/.staging/
                       if p.is_dir() and not p.parent.name.startswith("."))
        if job_id is None:
            return found
        return [p for p in found
                if (_json(p / "metadata.json") or {}).get("job_id") == job_id]

    # -- waiting -----------------------------------------------------------------------------
    def explain(self, job_id: str | None = None) -> str:
        """The job's files and log tail and every daemon's log tail, for a failure message."""
        parts = []
        if job_id is not None:
            parts.append(f"job {job_id}: attempts {self.attempt_files(job_id)}, "
                         f"result {self.result(job_id)}, progress state "
                         f"{self.progress(job_id).get('state')!r}")
            parts.append("log.txt tail:\n" + _tail(self.log(job_id), 25))
        for daemon in self.daemons:
            parts.append(f"daemon {daemon.daemon_id} (rc {daemon.returncode()}) log tail:\n"
                         + _tail(daemon.log_text(), 15))
        return "\n".join(parts)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float,
             job_id: str | None = None, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                     + self.explain(job_id))
            time.sleep(interval)

    def wait_result(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait(f"{job_id} to end", lambda: self.result(job_id), timeout, job_id)

    def wait_training(self, job_id: str, min_epoch: int = 1, timeout: float = 120.0,
                      attempt: int | None = None) -> dict[str, Any]:
        """Until progress.json says training and a checkpoint holds ``min_epoch`` finished
        epochs (it is read the way a worker reads it)."""
        from ktrdr_daemon.worker import load_checkpoint  # torch: only the tests that wait

        def training() -> dict[str, Any] | None:
            p = self.progress(job_id)
            ok = (p.get("phase") == "training" and (p.get("epoch") or 0) >= min_epoch
                  and p.get("state") == "running"
                  and (attempt is None or p.get("attempt") == attempt))
            if not ok:
                return None
            state = load_checkpoint(self.job_dir(job_id))
            return p if state is not None and state["epoch"] >= min_epoch else None

        return self.wait(f"{job_id} training epoch >= {min_epoch}", training, timeout, job_id)

    def wait_progress(self, job_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        """progress.json is replaced right after result.json: give it a moment."""
        return self.wait(f"{job_id} progress.json to say {state}",
                         lambda: self.progress(job_id).get("state") == state
                         and self.progress(job_id), timeout, job_id)

    def wait_accepted(self, job_id: str, timeout: float = 60.0) -> None:
        self.wait(f"{job_id} accepted", lambda: (self.job_dir(job_id) / "job.yaml").is_file()
                  or self.result(job_id), timeout, job_id)

    def wait_claim(self, job_id: str, attempt: int, timeout: float = 60.0) -> dict[str, Any]:
        path = self.job_dir(job_id) / "attempts" / f"{attempt}.claim"
        return self.wait(f"{job_id} attempt {attempt} claimed", lambda: _json(path), timeout,
                         job_id, interval=0.01)

    # -- daemons -------------------------------------------------------------------------------
    def daemon(self, daemon_id: str | None = None, **kwargs: Any) -> DaemonProcess:
        """Start a daemon on this site (not waiting for it to be ready)."""
        daemon = DaemonProcess(self, daemon_id or f"t-{secrets.token_hex(3)}", **kwargs)
        daemon.start()
        self.daemons.append(daemon)
        return daemon

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.kill()


class DaemonProcess:
    """``ktrdr-daemon run`` in its own process (and process group), logging to a file."""

    def __init__(self, site: Site, daemon_id: str, *, slots: int = 1,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.site, self.daemon_id, self.slots = site, daemon_id, slots
        self.args, self.extra_env = args, env or {}
        self.log_path = site.root / f"daemon-{daemon_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def command(self) -> list[str]:
        s = self.site
        return [sys.executable, "-m", "ktrdr_daemon.cli", "run", "--spool", str(s.spool),
                "--models", str(s.models), "--strategies", str(s.strategies),
                "--daemon-id", self.daemon_id, "--slots", str(self.slots), "--device", "cpu",
                *self.args]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
        env.update(TIMINGS)
        env.update(KTRDR_CONFIG=str(self.site.root / "no-daemon.yaml"),
                   XDG_RUNTIME_DIR=str(self.site.runtime), PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(REPO))
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()  # a restart appends; its own lines start here
            self.process = subprocess.Popen(
                self.command(), cwd=self.site.root, env=self.environment(), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_text(self, whole: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0 if whole else self._log_offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> DaemonProcess:
        """Until the daemon serves (its heartbeat file exists and it logged ``serving``)."""
        beat = self.site.spool / "daemons" / f"{self.daemon_id}.json"

        def ready() -> bool:
            if self.returncode() is not None:
                raise AssertionError(f"daemon {self.daemon_id} exited with {self.returncode()}"
                                     f":\n{_tail(self.log_text(), 30)}")
            return beat.is_file() and " serving " in self.log_text()

        self.site.wait(f"daemon {self.daemon_id} to serve", ready, timeout)
        return self

    def worker_pid(self, job_id: str, attempt: int, timeout: float = 60.0) -> int:
        """The worker's pid, from the daemon's log line ``<job>: attempt n started (pid P)``."""
        pattern = re.compile(rf"{re.escape(job_id)}: attempt {attempt} started \(pid (\d+)\)")

        def found() -> int | None:
            match = pattern.search(self.log_text(whole=True))
            return int(match[1]) if match else None

        return self.site.wait(f"{self.daemon_id} to start {job_id} attempt {attempt}", found,
                              timeout, job_id, interval=0.01)

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon {self.daemon_id} still running after {timeout} s:\n"
                                 + _tail(self.log_text(), 30)) from None

    def restart(self) -> DaemonProcess:
        """Start the same daemon id again (after it exited or was killed)."""
        assert self.returncode() is not None, "still running"
        self.start()
        return self

    def kill(self) -> None:
        """End the daemon and everything it started (its fork server and workers)."""
        if self.process is None:
            return
        gone = (ProcessLookupError, PermissionError, subprocess.TimeoutExpired)
        with contextlib.suppress(*gone):
            os.killpg(self.process.pid, signal.SIGCONT)
        with contextlib.suppress(*gone):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(*gone):
            self.process.wait(10)


def process_gone(pid: int) -> bool:
    """No process with this pid any more (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class FakeGpuDaemon:
    """A live GPU daemon as the spool sees one: ``daemons/<id>.json`` rewritten with a changing
    ``beat`` from a thread, on another host (so only the counter speaks for its liveness)."""

    def __init__(self, site: Site, daemon_id: str = "fake-gpu", free_slots: int = 1) -> None:
        self.path = site.spool / "daemons" / f"{daemon_id}.json"
        self.record = {"id": daemon_id, "daemon": daemon_id, "host": "gpu-box-elsewhere",
                       "pid": 1, "pid_start": None, "boot_id": "another-boot", "pid_ns": None,
                       "device": "cuda:0", "device_name": "Fake GPU", "slots": 1,
                       "free_slots": free_slots, "running": [], "started": True}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeGpuDaemon:
        self._write(0)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _write(self, beat: int) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({**self.record, "beat": beat}))
        os.replace(tmp, self.path)

    def _run(self) -> None:
        beat = 0
        while not self._stop.wait(0.2):
            beat += 1
            self._write(beat)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _tail(text: str, lines: int) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


