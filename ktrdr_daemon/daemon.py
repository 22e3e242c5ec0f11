"""The daemon: wake, accept, claim, start, heartbeat, reap.

    serve():   wake (an event or the rescan period) -> rescan() -> keep the executor ready
    rescan():  accept drops -> reap ended attempts (settling any publish) -> claim and start
               queued jobs -> reclaim dead owners' attempts -> enforce cancels
    heartbeat: its own thread beats every claim and ticks its worker's lifeline

Filesystem events only wake the loop early; the periodic rescan is the truth (spool spec 3.7).
Where an attempt runs is the executor's business (:mod:`ktrdr_daemon.executor`: local worker
processes or Slurm jobs); which daemon runs which job is :mod:`ktrdr_daemon.matching`; what an
attempt that died between publishing and its result leaves is :mod:`ktrdr_daemon.publication`.
Every step, and each job inside a step, is isolated: a bad file costs that job an error, never
the loop; if the loop itself dies, the daemon hands its jobs back and exits non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ktrdr_daemon import publication
from ktrdr_daemon import spool as sp
from ktrdr_daemon import worker as wk
from ktrdr_daemon.executor import Executor, LocalExecutor, SlurmExecutor, describe_exit
from ktrdr_daemon.instance import one_daemon_per_identity
from ktrdr_daemon.job_files import append_log, mirror_result
from ktrdr_daemon.matching import decide
from ktrdr_daemon.notify import sd_notify
from ktrdr_daemon.settings import Settings
from ktrdr_daemon.slurm import SlurmBackend, SlurmOptions
from ktrdr_daemon.validate import validate_job
from ktrdr_daemon.watcher import SpoolWatcher

log = logging.getLogger("ktrdr_daemon")

HANDBACK_TIMEOUT_S = 6.0  # SIGTERM -> exit within 10 s (spec 6): 4 s left for the rest
EXIT_LOOP_DIED = 70  # EX_SOFTWARE: the loop hit a bug; its traceback is in the log


@dataclass
class Running:
    """One attempt this daemon runs: its claim, its worker process and its lifeline."""

    claim: sp.Claim
    process: Any  # multiprocessing.Process from the fork-server context
    lifeline: Connection
    started: float = field(default_factory=time.monotonic)
    cancel_seen: float | None = None


class Daemon:
    """One daemon identity serving one spool; see the module docstring for the loop."""

    def __init__(self, settings: Settings, *, once: bool = False,
                 on_job_start: Callable[[str], None] | None = None,
                 slurm: SlurmOptions | None = None) -> None:
        self.settings, self.once, self.on_job_start = settings, once, on_job_start
        self.spool = sp.Spool(settings.spool)
        self.wake = threading.Event()
        self.daemon_id = settings.daemon_id or default_daemon_id(
            "slurm" if slurm else settings.device)
        self.executor: Executor = (
            SlurmExecutor(SlurmBackend(slurm, self.spool, self.daemon_id)) if slurm
            else LocalExecutor(settings.device, settings.models, self.wake.set))
        self.running: dict[str, Running] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.heartbeats_done = threading.Event()
        self.counters = {"completed": 0, "failed": 0, "cancelled": 0, "handed_back": 0,
                         "crashed": 0}
        self.first_seen: dict[str, float] = {}  # job id -> when this daemon first saw it queued
        self.live_daemons: list[dict[str, Any]] = []
        self._errors: dict[str, str] = {}  # the last error of each isolated step (log once)

    # -- start and stop --------------------------------------------------------------------
    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or, with ``once``, until nothing is left to do).

        Every step of a rescan is isolated (:meth:`_isolated`); should the loop itself die, the
        daemon hands its jobs back and exits non-zero rather than living on as a heartbeat
        that serves nothing (a service manager restarts it)."""
        instance_lock = one_daemon_per_identity(self.spool, self.daemon_id,
                                                self.settings.heartbeat_seconds)
        try:
            self._start()  # a start that fails (no such device) is the caller's error, as such
            return self._loop()
        finally:
            instance_lock.release()

    def _loop(self) -> int:
        """The loop, then the shutdown; a loop that dies still hands its jobs back."""
        try:
            while not self.stopping:
                self.wake.wait(self.settings.rescan_seconds)
                self.wake.clear()
                self.rescan()
                if self.once and self._idle():
                    break
                if not self.stopping:
                    self.executor.keep_ready()
            return self._shutdown()
        except Exception:
            log.exception("the daemon's loop died; handing jobs back and exiting")
            self.stopping = True
            try:
                self._shutdown()
            except Exception:
                log.exception("the shutdown failed too; killing the workers")
                self._kill_workers()
            return EXIT_LOOP_DIED

    def _start(self) -> None:
        self.spool.ensure_layout()
        self.me = sp.DaemonIdentity.current(self.daemon_id)
        self.judge = sp.LivenessJudge(self.me, self.settings.expire_seconds)
        self.incoming = sp.Incoming(self.spool)
        self._start_serving(self.executor.prepare())

    def _start_serving(self, device: dict[str, Any]) -> None:
        self.device = device
        self.is_gpu = self.device["device"] != "cpu"
        self.watcher = SpoolWatcher(self.spool, self.wake, self.settings.observer)
        self.watcher.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        self._write_heartbeat()
        self.heartbeats = threading.Thread(target=self._heartbeat_loop, name="heartbeat",
                                           daemon=True)
        self.heartbeats.start()
        log.info("daemon %s serving %s on %s (%s), watcher %s, slots %d", self.daemon_id,
                 self.spool.root, self.device["device"], self.device.get("name"),
                 self.watcher.kind, self.settings.slots)
        self.live_daemons = sp.read_daemons(self.spool, self.judge)  # the first claims need it
        self.rescan()
        sd_notify("READY=1\nSTATUS=serving " + str(self.spool.root))

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        log.info("%s: stop claiming, hand running jobs back", signal.Signals(signum).name)
        self.stopping = True
        self.wake.set()

    def _shutdown(self) -> int:
        """Hand every running attempt back (checkpoint at the next batch), then exit."""
        sd_notify("STOPPING=1")
        self.executor.close()
        for job_id in self.executor.outlives(list(self.running)):
            self._forget(job_id)
        with self.lock:
            running = dict(self.running)
        for job_id, run in running.items():
            log.info("%s: handing back attempt %d", job_id, run.claim.attempt)
            _send(run.lifeline, "handback")
        deadline = time.monotonic() + HANDBACK_TIMEOUT_S
        while self.running and time.monotonic() < deadline:
            time.sleep(0.02)
            self.reap()
        for job_id, run in list(self.running.items()):
            log.warning("%s: worker did not hand back in time; killed", job_id)
            run.process.kill()
            run.process.join()
            with self._isolated(job_id, "hand back"):
                run.claim.hand_back("killed during hand-back; resumes from the last checkpoint")
            self._forget(job_id)
        self.watcher.stop()
        self.heartbeats_done.set()
        self.heartbeats.join(timeout=5)
        sp.remove_daemon_heartbeat(self.spool, self.me)
        return 0

    # -- the rescan: the truth -------------------------------------------------------------
    def rescan(self) -> None:
        """One pass; each step (and, inside, each job) is isolated: a bad file or a vanished
        folder costs that job a logged error, never the loop."""
        folders: list[sp.JobFolder] = []
        with self._isolated("spool", "layout"):
            self.spool.ensure_layout()  # a folder removed by hand is re-created, not fatal
            self.watcher.ensure_alive()
        with self._isolated("incoming", "accept"):
            self.accept_drops()
        with self._isolated("jobs", "scan"):
            folders = sp.scan_jobs(self.spool)  # one listing per rescan, shared by every pass
            for job_id in self.incoming.recover_unaccepted(self._validate, folders):
                self._mirror_if_ended(job_id)
        with self._isolated(self.executor.kind, "poll"):
            self.executor.poll(dict(self.running))
        self.reap()
        # Mode matching needs the live daemons as they are now: a GPU daemon that started a
        # moment before a drop takes its auto job (a few small files: well under a millisecond).
        with self._isolated("daemons", "read"):
            self.live_daemons = sp.read_daemons(self.spool, self.judge)
        if not self.stopping:
            with self._isolated("queue", "claim"):
                self.claim_jobs(folders)
        with self._isolated("jobs", "reclaim"):
            self.reclaim_dead(folders)
        self.enforce_cancels()

    @contextlib.contextmanager
    def _isolated(self, subject: str, step: str) -> Iterator[None]:
        """Run one step for one subject (a job id, or a pass); an error is logged (its traceback
        once per distinct error) and the loop goes on; the step is retried next rescan."""
        try:
            yield
        except Exception as exc:
            key, text = f"{subject}:{step}", f"{type(exc).__name__}: {exc}"
            if isinstance(exc, FileNotFoundError) and sp.is_safe_name(subject) and not (
                    self.spool.jobs / subject).is_dir() and (self.spool.jobs).is_dir():
                log.warning("%s: its folder was removed (%s); nothing left to %s", subject,
                            exc.filename, step)
            elif self._errors.get(key) != text:
                self._errors[key] = text
                log.exception("%s: %s failed; retried at the next rescan", subject, step)
            else:
                log.warning("%s: %s failed again: %s", subject, step, text)

    def accept_drops(self) -> None:
        fast = self.watcher.take_completed()  # renamed in: complete now
        for drop in sorted(set(self.incoming.complete_drops(wait=False)) | fast):
            if not os.path.lexists(drop):  # a symlink drop may dangle: it still ends failed
                continue
            with self._isolated(drop.name, "accept"):
                job_id = sp.accept_drop(self.spool, drop, self._validate)
                if job_id:
                    self._mirror_if_ended(job_id)

    def _validate(self, body: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
        return validate_job(body, source, self.settings)

    def reap(self) -> None:
        """Collect finished workers; a crash fails that attempt only (it counts). An attempt
        that ended without a result may have published: it is settled at once."""
        for job_id, run in list(self.running.items()):
            if run.process.is_alive():
                continue
            run.process.join()
            try:
                with self._isolated(job_id, "reap"):
                    self._reap_one(job_id, run)
            finally:
                self._forget(job_id)

    def _reap_one(self, job_id: str, run: Running) -> None:
        code = run.process.exitcode
        if code == wk.EXIT_HANDED_BACK:
            self.counters["handed_back"] += 1
            return
        if code in (wk.EXIT_DONE, wk.EXIT_FENCED):
            state = (sp.read_result(self.spool, job_id) or {}).get("state")
            if state in self.counters:
                self.counters[state] += 1
            if code == wk.EXIT_FENCED:
                run.claim.abandon("the worker lost its claim (fenced)")
        else:
            self.counters["crashed"] += 1
            reason = f"the worker {describe_exit(code)}"
            log.warning("%s: attempt %d failed: %s", job_id, run.claim.attempt, reason)
            self.executor.after_crash(run.process)
            run.claim.abandon(reason)
            _append_log(self.spool, job_id, f"[attempt {run.claim.attempt} failed] {reason}")
        if sp.read_result(self.spool, job_id) is None:
            self._settle(job_id)

    def _settle(self, job_id: str) -> None:
        """Publish, then result: finish what an ended attempt left (publication.settle)."""
        if not sp.publish_intents(self.spool, job_id) and not sp.is_cancel_requested(
                self.spool, job_id):
            return
        state = publication.settle(self.spool, job_id)
        if state != "queued":
            log.info("%s: settled after its attempt ended: %s", job_id, state)
        self._mirror_if_ended(job_id)

    def reclaim_dead(self, folders: list[sp.JobFolder] | None = None) -> None:
        """End attempts of dead owners (at once when provably dead, else after T_expire)."""
        for found in sp.find_reclaimable(self.spool, self.judge, folders):
            if found.job_id in self.running:
                continue
            with self._isolated(found.job_id, "reclaim"):
                if self.executor.reclaim(self.spool, found, self.me):
                    log.info("%s: reclaimed attempt %d (%s)", found.job_id, found.attempt,
                             found.reason)
                    _append_log(self.spool, found.job_id,
                                f"[attempt {found.attempt} reclaimed by {self.daemon_id}] "
                                f"{found.reason}")
                    self._settle(found.job_id)
                    self.wake.set()

    def enforce_cancels(self) -> None:
        """A running job stops itself at the next batch; one that ignores it is killed, and
        settled like any attempt that ended without a result (its version, if any, withdrawn)."""
        now = time.monotonic()
        for job_id, run in list(self.running.items()):
            with self._isolated(job_id, "cancel"):
                if not sp.is_cancel_requested(self.spool, job_id):
                    continue
                run.cancel_seen = run.cancel_seen or now
                if now - run.cancel_seen < self.settings.cancel_grace_seconds:
                    continue
                log.warning("%s: ignored the cancel for %.1f s; killed", job_id,
                            now - run.cancel_seen)
                self.executor.cancel(run.process)
                self._forget(job_id)
                self.executor.after_crash(run.process)
                run.claim.abandon("killed after the cancel grace period")
                self._settle(job_id)

    def claim_jobs(self, folders: list[sp.JobFolder] | None = None) -> None:
        free = self.settings.slots - len(self.running)
        for info in sp.queued_jobs(self.spool, folders):  # no file read per job: 10,000 may wait
            if info.id in self.running:
                continue
            with self._isolated(info.id, "claim"):
                if self._claim_one(info, free):
                    free -= 1

    def _claim_one(self, info: sp.JobInfo, free: int) -> bool:
        """Decide one queued job; True when a worker was started for it. What ends a job without
        running it (a broken job.yaml, a cancel, no GPU daemon for a GPU job, an unsettled
        publish) is done here whatever the free slots: no job waits for a slot only to end."""
        job_id = info.id
        if info.broken:
            self._fail(job_id, info.broken, where="job.yaml")
            return False
        if info.unsettled:
            self._settle(job_id)
            return False
        if info.cancel_requested and sp.finish_cancelled(self.spool, job_id):
            self._mirror_if_ended(job_id)
            return False
        note = self._match(job_id, {"execution": info.execution})
        if note is False or free <= 0:
            return False
        claim = sp.try_claim(self.spool, job_id, self.me, t_fence=self.settings.fence_seconds)
        if claim is None:
            self._mirror_if_ended(job_id)
            return False
        if isinstance(note, str):
            _append_log(self.spool, job_id, note)
        self._start_worker(job_id, claim)
        return True

    # -- which daemon runs which job (spec 4, ktrdr_daemon.matching) -------------------------
    def _match(self, job_id: str, job: dict[str, Any]) -> bool | str:
        """True or a log note to claim; False to leave the job (or after failing it)."""
        waited = time.monotonic() - self.first_seen.setdefault(job_id, time.monotonic())
        decision = decide(job.get("execution") or {}, is_gpu=self.is_gpu,
                          live_daemons=self.live_daemons, waited_s=waited)
        if decision.fail:
            source = (sp.read_job_header(self.spool, job_id) or {}).get("source") or job_id
            self._fail(job_id, f"{source}: {decision.fail}")  # names the file the user dropped
        if not decision.claim:
            return False
        return decision.note or True

    def _fail(self, job_id: str, message: str, where: str = "scheduling") -> None:
        if sp.write_result(self.spool, job_id, "failed",
                           error={"message": message, "where": where}):
            log.warning("%s: failed: %s", job_id, message)
            self._mirror_if_ended(job_id)

    # -- workers -----------------------------------------------------------------------------
    def _start_worker(self, job_id: str, claim: sp.Claim) -> None:
        s = self.settings
        task = wk.WorkerTask(
            spool_root=str(self.spool.root), job_id=job_id, attempt=claim.attempt,
            claim_data=claim._data, daemon_id=self.daemon_id, host=self.me.host,
            device=self.device["device"], data_root=str(s.data_root),
            models_root=str(s.models), strategies_root=str(s.strategies), threads=s.threads,
            t_fence=s.fence_seconds, strict=s.strict,
            checkpoint_seconds=s.checkpoint_seconds)
        handle, lifeline = self.executor.start(task, claim)
        with self.lock:
            self.running[job_id] = Running(claim, handle, lifeline)
        self.watcher.watch_job(job_id)
        log.info("%s: attempt %d started (pid %s)", job_id, claim.attempt, handle.pid)
        if self.on_job_start is not None:
            self.on_job_start(job_id)

    def _forget(self, job_id: str) -> None:
        with self.lock:
            run = self.running.pop(job_id, None)
        if run is not None:
            run.lifeline.close()
        self.watcher.unwatch_job(job_id)
        self.wake.set()  # a slot is free

    # -- heartbeats (own thread) --------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        # Beats go on after SIGTERM until the shutdown is over: a worker that is handing back
        # needs its ticks, or it would fence itself and the hand-back would count as a failure.
        while not self.heartbeats_done.wait(self.settings.heartbeat_seconds):
            with self.lock:
                running = dict(self.running)
            for job_id, run in running.items():
                if run.claim.beat():
                    _send(run.lifeline, "tick")
                elif (not self.stopping and sp.read_result(self.spool, job_id) is None
                      and run.process.is_alive()):
                    # Fenced: the worker stops on its own once ticks stop; make it sure. Not
                    # while stopping: a handing-back worker ends its own attempt, then exits.
                    log.warning("%s: lost the claim of attempt %d; stopping the worker",
                                job_id, run.claim.attempt)
                    run.process.kill()
            self._write_heartbeat()

    def _write_heartbeat(self) -> None:
        with self.lock:
            jobs = sorted(self.running)
        try:
            sp.write_daemon_heartbeat(self.spool, self.me, {
                "device": self.device["device"], "device_name": self.device.get("name"),
                "memory_bytes": self.device.get("memory_bytes"), "slots": self.settings.slots,
                "free_slots": self.settings.slots - len(jobs), "running": jobs,
                "counters": dict(self.counters), "watcher": self.watcher.kind,
                "version": _version(), "started": True,
            })
        except OSError as exc:
            log.warning("cannot write the daemon heartbeat: %s", exc)

    # -- helpers -----------------------------------------------------------------------------
    def _idle(self) -> bool:
        """Nothing running and nothing queued that this daemon could run."""
        if self.running or self.incoming.complete_drops(wait=True):
            return False
        for job_id in sp.queued_jobs_in_order(self.spool):
            job = sp.read_job_header(self.spool, job_id)
            if job is not None and self._match(job_id, job) is not False:
                return False
        return True

    def _kill_workers(self) -> None:
        """The last resort when the shutdown itself failed: no worker outlives its daemon."""
        for run in list(self.running.values()):
            with contextlib.suppress(Exception):
                run.process.kill()

    def _mirror_if_ended(self, job_id: str) -> None:
        result = sp.read_result(self.spool, job_id)
        if result is not None:
            mirror_result(self.spool.job_dir(job_id), self.spool.tmp, result)


def default_daemon_id(device: str) -> str:
    """``<host>-<device setting>``: one CPU and one GPU daemon per host by default."""
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in os.uname().nodename)
    return f"{host[:50]}-{device.replace(':', '')}"


def _send(conn: Connection, message: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # the worker is gone; the reaper will see it
        conn.send(message)


def _append_log(spool: sp.Spool, job_id: str, line: str) -> None:
    append_log(spool.job_dir(job_id), line)


def _version() -> str:
    from ktrdr_daemon import __version__

    return __version__
