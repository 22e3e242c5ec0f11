"""The child process that runs one attempt of one job through ``pipeline.run.run_training``.

The daemon starts workers from a fork server that imported this module (and so torch and the
pipeline) once, so a job does not pay the ``import torch`` cost. A worker talks to its daemon
through one pipe, the *lifeline*:

- ``"tick"`` after every heartbeat the daemon wrote for this attempt. No tick for ``t_fence``
  (the daemon is stopped, or its disk is gone) and the worker exits at once, publishing nothing:
  by then another daemon may be about to reclaim the job (spec 3.4, self-fencing).
- ``"handback"`` when the daemon got SIGTERM: checkpoint at the next batch, end the attempt as
  handed back, exit.
- end of file when the daemon died: exit at once, so no orphan keeps training.

Everything else a worker needs to know is in files: the job, the cancel marker, the claim.

A Slurm job (``ktrdr_daemon.slurm``) runs the same attempt through :func:`run_with`, with a lease
file in place of the pipe: the liveness source is the only difference.

torch and the training pipeline are imported where they are used, not at the top: the daemon
imports this module for its task and exit codes and must stay free of torch (its start, memory
and, above all, its exit: tearing down an interpreter that loaded torch costs ~0.4 s of CPU,
seconds on a loaded box, out of the 10 s a SIGTERM allows). The fork server imports them all
once (:mod:`ktrdr_daemon.preload`), so a worker finds them loaded.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from ktrdr_daemon import publication
from ktrdr_daemon import spool as sp
from ktrdr_daemon.file_writer import FileWriter
from ktrdr_daemon.progress import ProgressWriter
from ktrdr_daemon.settings import Settings
from pipeline.errors import Cancelled, HandedBack, PipelineError
from pipeline.job import load_job

# The interpreter's switch interval in a worker (CPython's default is 5 ms): how long the
# training thread may wait for the GIL before it makes the thread holding it let go. The file
# thread gives the GIL up and takes it back at each of its ~12 system calls an epoch, and with
# 5 ms the training thread lost ~1.5 % of its time waiting; with 1 ms, ~1 % (bench_overhead).
SWITCH_INTERVAL_S = 0.001

# Exit codes the daemon reads. Anything else (a crash, a signal) fails the attempt.
EXIT_DONE = 0  # a result was written (or another writer's result stands)
EXIT_HANDED_BACK = 3  # attempt ended as handed back; the job is queued again
EXIT_FENCED = 4  # lost the claim or the daemon: nothing published, nothing written
EXIT_ORPHANED = 5  # the daemon died

CHECKPOINT = "checkpoint"
# torch.save of plain state dicts (pipeline.checkpoint). Earlier versions wrote state.pt
# (torch.save of packed states) and state.ckpt (a hand-written format): a folder holding only
# those is reported and the job starts over.
CHECKPOINT_FILE = "last.pt"


@dataclass(frozen=True)
class WorkerTask:
    """What a worker is told; plain values so it pickles to the fork server."""

    spool_root: str
    job_id: str
    attempt: int
    claim_data: bytes
    daemon_id: str
    host: str
    device: str
    data_root: str
    models_root: str
    strategies_root: str
    threads: int = 1
    t_fence: float = sp.T_FENCE_S
    strict: bool = False
    executor: str = "local"  # "slurm": a stop keeps the attempt open (Slurm requeues the job)
    checkpoint_seconds: float = Settings.checkpoint_seconds  # at most one checkpoint this often


class WorkerStop:
    """The pipeline's stop source: cancel marker, hand-back request, or lost lifeline."""

    CHECK_EVERY_S = 0.002  # how stale the answer about the marker may be

    def __init__(self, cancel_marker: Path) -> None:
        self.cancel_marker = cancel_marker
        self._marker = os.fsencode(cancel_marker)
        self._checked = -1.0
        self._cancelled = False
        self.handback = False

    def reason(self) -> str | None:
        # Asked between every two batches. The marker is looked up at most every 2 ms (a
        # `touch` is still seen within a batch or two): batches of small networks take
        # 0.3-1 ms, and a system call for each was ~0.4 % of training on a virtual machine.
        # faccessat without following a symlink: any marker counts, and no exception.
        now = time.monotonic()
        if not self._cancelled and now - self._checked >= self.CHECK_EVERY_S:
            self._checked = now
            self._cancelled = os.access(self._marker, os.F_OK, follow_symlinks=False)
        if self._cancelled:
            return "cancel"
        return "handback" if self.handback else None


class Lifeline:
    """Reads the daemon's pipe in a thread; fences (exits) when the ticks stop."""

    def __init__(self, conn: Connection, stop: WorkerStop, t_fence: float) -> None:
        self.conn, self.stop, self.t_fence = conn, stop, t_fence
        self.last_tick = time.monotonic()

    def start(self, claim: sp.Claim, progress: ProgressWriter) -> None:
        threading.Thread(target=self._run, name="lifeline", daemon=True).start()

    def fresh(self) -> bool:
        return time.monotonic() - self.last_tick < self.t_fence

    def _run(self) -> None:
        while True:
            try:
                ready = self.conn.poll(self.t_fence)
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                os._exit(EXIT_ORPHANED)  # the daemon is gone: no orphan keeps training
            if message is None:
                os._exit(EXIT_FENCED)  # no tick for t_fence: a reclaim may be under way
            if message == "tick":
                self.last_tick = time.monotonic()
            elif message == "handback":
                self.stop.handback = True


def run_attempt(task: WorkerTask, conn: Connection) -> None:
    """The worker's main function: never returns, exits with one of the codes above."""
    os._exit(_attempt(task, conn))


def run_spare(conn: Connection) -> None:
    """A worker forked before it is needed: it waits for its task on the lifeline, so a claimed
    job starts without a fork (~20 ms). The daemon gone or stopping (end of file): exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    try:
        task = conn.recv()
    except (EOFError, OSError):
        os._exit(EXIT_ORPHANED)
    run_attempt(task, conn)


class Liveness(Protocol):
    """Says whether the daemon still holds this attempt: the lifeline here, a lease in Slurm."""

    def start(self, claim: sp.Claim, progress: ProgressWriter) -> None: ...

    def fresh(self) -> bool: ...


def _attempt(task: WorkerTask, conn: Connection) -> int:
    stop = WorkerStop(sp.Spool(Path(task.spool_root)).job_dir(task.job_id) / sp.CANCEL)
    return run_with(task, stop, Lifeline(conn, stop, task.t_fence))


def run_with(task: WorkerTask, stop: WorkerStop, liveness: Liveness) -> int:
    """One attempt, whoever hosts it (a forked child or a Slurm job); returns an exit code."""
    spool = sp.Spool(Path(task.spool_root))
    job_dir = spool.job_dir(task.job_id)
    # Ctrl-C in a terminal reaches the whole process group: the daemon decides, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: setattr(stop, "handback", True))
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Our view of the claim: ownership is checked through files; liveness through `liveness`.
    claim = sp.Claim(spool, task.job_id, task.attempt, task.claim_data, t_fence=float("inf"))
    progress = ProgressWriter(job_dir, spool.tmp, job_id=task.job_id, attempt=task.attempt,
                              daemon=task.daemon_id, host=task.host, device=task.device)
    liveness.start(claim, progress)
    try:
        code = _train(task, spool, claim, stop, liveness, progress)
    except OSError:
        if job_dir.is_dir():
            raise
        code = EXIT_FENCED  # the job's folder was removed (rm -rf, mv): nobody to report to
    try:
        progress.close()
    except OSError:
        if job_dir.is_dir():
            raise
    return code


def _train(task: WorkerTask, spool: sp.Spool, claim: sp.Claim, stop: WorkerStop,
           liveness: Liveness, progress: ProgressWriter) -> int:
    job_dir = spool.job_dir(task.job_id)
    job_file = sp.read_job(spool, task.job_id) or {}
    strategy_dir: list[str] = []  # known once the job is loaded

    def before_publish() -> None:
        if not (liveness.fresh() and claim.still_current()):
            raise Fenced()
        # Publish, then result: say where, so a death before result.json is settled (publication)
        sp.record_publish_intent(claim, {"strategy_dir": strategy_dir[0],
                                         "submission": publication.submission_of(job_file)})

    import torch

    from pipeline.checkpoint import IntervalCheckpoint, describe_resume
    from pipeline.run import run_training
    from pipeline.store import ModelStore

    torch.set_num_threads(task.threads)
    try:
        job = load_job({"strategy": job_file.get("strategy")}, source_name=task.job_id,
                       strict=task.strict)
        strategy_dir.append(str(ModelStore(Path(task.models_root)).root / job.strategy.name))
        # This very attempt published before (Slurm restarts an attempt in place): its version
        # is found by the intent it recorded and the submission the version records.
        existing = publication.versions_of(spool, task.job_id)
        if existing:
            progress.set_state("running")
            return _complete(spool, claim, progress, existing[-1], {}, {}, [], task,
                             reused=True)
        resume = load_checkpoint(job_dir, progress)
        progress.set_state("running", resumed_from_epoch=_resumed_epoch(resume))
        if resume is not None:  # say so in the log: the epochs before it are not run again
            progress.log(describe_resume(resume, job.strategy.training["epochs"], task.attempt))
        result = run_training(
            job, data_root=Path(task.data_root), models_root=Path(task.models_root),
            device=task.device, threads=task.threads, job_id=task.job_id, on_event=progress,
            stop=stop, resume=resume,
            checkpoints=IntervalCheckpoint(checkpoint_saver(progress.files, job_dir),
                                           task.checkpoint_seconds),
            before_publish=before_publish,
            provenance=publication.provenance(task.job_id, job_file, task.attempt),
            strict=task.strict,
        )
    except Cancelled:
        return _cancelled(spool, claim, progress)
    except HandedBack:
        progress.files.flush()  # the hand-back checkpoint is on disk before anyone resumes it
        if task.executor == "slurm":  # Slurm requeues this very job: the attempt stays open
            progress.set_state("queued", message="stopped by Slurm (requeue, preemption or "
                               "time limit); resumes from the checkpoint")
            return EXIT_HANDED_BACK
        claim.hand_back("the daemon stopped (SIGTERM); resumes from the checkpoint")
        progress.set_state("queued", message="handed back; resumes from the checkpoint")
        return EXIT_HANDED_BACK
    except Fenced:
        if os.path.lexists(job_dir / sp.CANCEL):
            return _cancelled(spool, claim, progress)
        return EXIT_FENCED
    except PipelineError as exc:  # bad data or strategy: another attempt would fail the same way
        return _failed(spool, claim, progress, task, job_file, str(exc))
    except OSError as exc:
        if not job_dir.is_dir():
            raise  # the job's folder is gone: no log to write to (run_with ends quietly)
        if exc.errno not in NO_SPACE:
            progress.log(traceback.format_exc())
            raise
        # A full disk: another attempt would write the same bytes into the same full disk.
        where = f" ({exc.filename})" if exc.filename else ""
        return _failed(spool, claim, progress, task, job_file,
                       f"no space left on the device{where}: {os.strerror(exc.errno)}; free some "
                       "space (models, spool) and `ktrdr-daemon retry` the job")
    except Exception:
        progress.log(traceback.format_exc())
        raise
    metrics = {"test": result.metrics["test"], "training": {
        k: v for k, v in result.metrics["training"].items() if k != "history"}}
    return _complete(spool, claim, progress, result.model_path, metrics, result.timings,
                     result.warnings, task)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _failed(spool: sp.Spool, claim: sp.Claim, progress: ProgressWriter, task: WorkerTask,
            job_file: dict[str, Any], problem: str) -> int:
    """End the job failed with ``problem``, naming the file the user dropped."""
    source = str(job_file.get("source") or task.job_id)
    message = problem if source in problem else f"{source}: {problem}"
    error = {"message": message, "where": progress.snapshot.get("phase") or "start"}
    if sp.write_result(spool, task.job_id, "failed", claim, error=error, device=task.device):
        progress.set_state("failed", error=error)
    return EXIT_DONE


class Fenced(Exception):
    """Raised in ``before_publish`` (or by a stop source): this attempt may no longer publish."""


def _complete(spool: sp.Spool, claim: sp.Claim, progress: ProgressWriter, model_path: Path,
              metrics: dict, timings: dict, warnings: list[str], task: WorkerTask,
              reused: bool = False) -> int:
    fields: dict[str, Any] = {"model_path": str(model_path), "metrics": metrics,
                              "timings": timings, "warnings": warnings, "device": task.device}
    if reused:
        fields["note"] = "model published by an earlier attempt of this job"
    if sp.write_result(spool, task.job_id, "completed", claim, **fields):
        progress.set_state("completed", model_path=str(model_path))
        return EXIT_DONE
    if os.path.lexists(spool.job_dir(task.job_id) / sp.CANCEL) and claim.still_owner():
        # Cancelled between the publish and the result: withdraw the version, end cancelled.
        publication.withdraw(Path(model_path), f"{task.job_id} was cancelled")
        return _cancelled(spool, claim, progress)
    return EXIT_FENCED


def _cancelled(spool: sp.Spool, claim: sp.Claim, progress: ProgressWriter) -> int:
    if sp.write_result(spool, claim.job_id, "cancelled", claim):
        progress.set_state("cancelled")
    return EXIT_DONE


def checkpoint_saver(files: FileWriter, job_dir: Path) -> Callable[[dict[str, Any]], None]:
    """What the checkpoint callback saves with: has ``checkpoint/last.pt`` replaced atomically
    (written in tmp/, renamed) by the job's writer thread, so a reader never sees half a file
    and training does not wait for ``torch.save`` or the disk (the state is the trainer's own
    copy). No fsync: a process crash keeps the renamed file, and after a power loss a torn
    checkpoint only means training starts over (see load). Whoever hands the attempt back
    flushes ``files`` first, so the next attempt finds this very checkpoint."""
    from pipeline.checkpoint import to_bytes

    folder = job_dir / CHECKPOINT
    path = folder / CHECKPOINT_FILE

    def save(state: dict[str, Any]) -> None:
        folder.mkdir(exist_ok=True)
        files.replace(path, lambda: to_bytes(state))

    return save


def load_checkpoint(job_dir: Path, progress: ProgressWriter | None = None) -> dict[str, Any] | None:
    """The last checkpoint, read with ``torch.load(weights_only=True)`` (nothing but tensors
    and plain values is rebuilt), or None.

    An unreadable checkpoint, or one another version wrote, is reported and ignored: starting
    over is always correct."""
    from pipeline.checkpoint import from_bytes
    from pipeline.trainer import check_checkpoint

    path = job_dir / CHECKPOINT / CHECKPOINT_FILE
    if not path.is_file():
        # Another name there (state.pt, state.ckpt) was written by an older version.
        others = sorted(os.listdir(path.parent)) if path.parent.is_dir() else []
        if others and progress is not None:
            progress({"type": "warning", "message": f"checkpoint {others[0]} was written by "
                      "another version of ktrdr-daemon; starting over"})
        return None
    try:
        state = from_bytes(path.read_bytes())
        check_checkpoint(state)
        return state
    except Exception as exc:  # torn or foreign file: never trust it
        if progress is not None:
            progress({"type": "warning",
                      "message": f"checkpoint {path.name} unreadable ({exc}); starting over"})
        return None


def warm_up() -> None:
    """Run once in the fork server: import what torch and matplotlib load lazily (the Adam
    optimizer pulls in torch._dynamo, ~2 s; the report needs matplotlib), so no job pays it."""
    import torch

    import pipeline.run  # noqa: F401  (the whole pipeline, torch included)
    import pipeline.store  # noqa: F401

    model = torch.nn.Linear(2, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 2)).sum().backward()
    optimizer.step()
    try:  # the report: Agg canvas, fonts and the first draw are slow once per process
        from pipeline.report import warm_up as warm_up_report

        warm_up_report()
    except ImportError:  # the report is optional at run time
        pass


def _resumed_epoch(state: dict[str, Any] | None) -> int | None:
    return None if state is None else int(state.get("epoch", 0))


def probe_device(requested: str, conn: Connection) -> None:
    """Run in a fork-server child at daemon start: prove the device with a real allocation and
    send its description (or the error) back, so the daemon itself never imports torch."""
    from pipeline.device import describe_device, select_device

    try:
        conn.send(("ok", describe_device(select_device(requested))))
    except PipelineError as exc:
        conn.send(("error", str(exc)))
    conn.close()
