"""Run spool jobs on a Slurm cluster through ``submitit``: the Slurm job is the worker.

A daemon on a login node claims jobs as usual (spool spec 3), then, instead of forking a worker,
submits one Slurm job per attempt. The spool and the model store are on the cluster's shared
filesystem, so the Slurm job writes progress, log, checkpoints and the model itself, through the
same :func:`ktrdr_daemon.worker.run_with` a local worker runs. What differs is who proves the
daemon is alive, and who may end the attempt:

    jobs/<id>/slurm.json              {slurm_job_id, attempt, submitted_at, ...}: which Slurm job
                                      serves which attempt; the Slurm job runs only if named here
    jobs/<id>/slurm/                  submitit's folder: the pickled call, stdout, stderr
    jobs/<id>/attempts/<n>.lease      rewritten by the daemon after each successful claim beat

- Liveness. The Slurm job cannot get lifeline ticks; it watches the lease instead, judging it by
  its own monotonic clock (content unchanged for t_fence = silent), never by a timestamp.
- Pause, not death, when the daemon goes silent: training stops at the next batch and nothing is
  published until a daemon renews the lease or adopts the job; after ``adopt_wait`` the Slurm job
  gives up (fenced) and frees its allocation.
- Adoption. A daemon that reclaims a dead daemon's attempt n finds ``slurm.json`` naming a Slurm
  job still alive: it ends n without counting it, claims n+1 and rewrites ``slurm.json`` to name
  the same Slurm job for n+1. The Slurm job sees that and carries on as attempt n+1. So there is
  never a second Slurm job for an attempt, nor two running for one job.
- Requeue. Slurm preemption, ``scontrol requeue`` or the time-limit warning (submitit's USR2
  handler, through :class:`SlurmAttempt.checkpoint`) stop the job; it restarts as the same Slurm
  job and attempt and resumes from ``checkpoint/``. ``SLURM_RESTART_COUNT`` bounds the restarts.
- Cancel. The cancel marker makes the daemon ``scancel`` the job (``job.cancel()``); the job
  itself also sees the marker at the next batch.
- Failure. A Slurm job that ends FAILED, TIMEOUT, OUT_OF_MEMORY... ends the spool job ``failed``
  with Slurm's state, reason, exit code and the tail of its output. A node failure or a job that
  vanished fails only the attempt (the next one resubmits and resumes from the checkpoint).

Slurm state is read with one ``squeue`` per rescan for all of this daemon's jobs (no ``sacct``:
a cluster without slurmdbd has none); ``scontrol show job`` only once a job has ended.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon import worker as wk
from ktrdr_daemon.job_files import append_log, mirror_result, mirror_state
from ktrdr_daemon.progress import ProgressWriter

log = logging.getLogger("ktrdr_daemon")

RECORD = "slurm.json"
FOLDER = "slurm"
POLL_S = 0.5  # how often the Slurm job looks at its lease and at slurm.json
ADOPT_GRACE_S = 10.0  # attempt ended: how long to wait for slurm.json to name us again
COMMAND_TIMEOUT_S = 30.0

QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                           "SUSPENDED", "RESV_DEL_HOLD", "SPECIAL_EXIT", "STOPPED"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"})
RETRY_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "VANISHED"})  # not the job's fault
TERMINAL_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY",
                             "DEADLINE"}) | RETRY_STATES


@dataclass(frozen=True)
class SlurmOptions:
    """``ktrdr-daemon run --executor slurm`` flags."""

    partition: str | None = None
    gpus_per_job: int = 0
    time: str = "2:00:00"
    max_jobs: int = 1
    max_requeues: int = 3  # restarts of one Slurm job (preemption, time limit, requeue)
    adopt_wait: float = 300.0  # a Slurm job whose daemon went silent waits this long, paused
    python: str | None = None  # the interpreter on the nodes; default this one (shared venv)


def parse_time(text: str) -> int:
    """Slurm's time formats (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) to
    whole minutes, at least 1, as submitit's ``time`` wants them."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"not a Slurm time limit: {text!r} (e.g. 90, 2:00:00, 1-12:00)")
    days, a, b, c = (int(x) if x else None for x in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:  # M
        seconds = a * 60
    return max(1, -(-seconds // 60))


# --- files: the record and the lease ------------------------------------------------------------


def read_record(spool: sp.Spool, job_id: str) -> dict[str, Any] | None:
    try:
        record = json.loads((spool.job_dir(job_id) / RECORD).read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(spool: sp.Spool, job_id: str, record: dict[str, Any]) -> None:
    sp.atomic_write(spool.tmp, spool.job_dir(job_id) / RECORD,
                    json.dumps(record, indent=1).encode() + b"\n")


def lease_path(spool: sp.Spool, job_id: str, attempt: int) -> Path:
    return spool.attempts_dir(job_id) / f"{attempt}.lease"


class LeaseLine:
    """The daemon's side of the lease; stands in for a worker's lifeline (``send("tick")``)."""

    def __init__(self, spool: sp.Spool, job_id: str, attempt: int) -> None:
        self.path = lease_path(spool, job_id, attempt)
        self.tmp = spool.tmp
        self.counter = 0
        self.send("tick")

    def send(self, message: str) -> None:
        if message != "tick":  # no hand-back: a Slurm job outlives its daemon (adoption)
            return
        self.counter += 1
        # A flaky share: the Slurm job pauses after t_fence; it never publishes unrenewed.
        with contextlib.suppress(OSError):
            sp.atomic_write(self.tmp, self.path, b"%d\n" % self.counter, durable=False)

    def close(self) -> None:
        pass


# --- the Slurm side ------------------------------------------------------------------------------


class LeaseWatch:
    """The Slurm job's liveness source: the daemon's lease, and ``slurm.json`` for adoption."""

    def __init__(self, spool: sp.Spool, job_id: str, slurm_job_id: str, t_fence: float,
                 adopt_wait: float) -> None:
        self.spool, self.job_id, self.slurm_job_id = spool, job_id, slurm_job_id
        self.t_fence, self.adopt_wait = t_fence, adopt_wait
        self.owned = True
        self.gave_up = False
        self._content: bytes | None = None
        self._changed = time.monotonic()
        self._waiting: tuple[bool, float] | None = None  # (still owned?, since when)

    def start(self, claim: sp.Claim, progress: ProgressWriter) -> None:
        self.claim, self.progress = claim, progress
        threading.Thread(target=self._run, name="lease", daemon=True).start()

    def live(self) -> bool:
        return self.owned and time.monotonic() - self._changed < self.t_fence

    def fresh(self) -> bool:
        """Asked right before publishing: wait out a pause rather than throw the work away."""
        return self.wait_live() == "live"

    def wait_live(self) -> str:
        """Block while paused: "live" once a daemon renews the lease (ours, or an adopter's),
        "cancel" when the job is cancelled meanwhile, "gone" when nobody took it over."""
        if self.live():
            return "live"
        self.progress.log("   paused: the daemon's lease is not renewed; waiting for a daemon "
                          "to take this Slurm job over")
        while not self.live():
            if sp.is_cancel_requested(self.spool, self.job_id):
                return "cancel"
            if self.gave_up:
                return "gone"
            time.sleep(POLL_S)
        self.progress.log("   resumed: the lease is renewed")
        return "live"

    def _run(self) -> None:
        while not self.gave_up:
            time.sleep(POLL_S)
            try:
                self._look()
            except Exception as exc:  # a share hiccup must not kill the watch silently
                self.progress.log(f"   lease check failed: {exc}")

    def _look(self) -> None:
        now = time.monotonic()
        record = read_record(self.spool, self.job_id) or {}
        attempt = record.get("attempt")
        if (str(record.get("slurm_job_id")) == self.slurm_job_id and isinstance(attempt, int)
                and attempt > self.claim.attempt):
            self._follow(attempt, record.get("adopted_by"))
        try:
            content = lease_path(self.spool, self.job_id, self.claim.attempt).read_bytes()
        except OSError:
            content = None
        if content != self._content:
            self._content, self._changed = content, now
        self.owned = self.claim.still_owner()
        if self.live():
            self._waiting = None
            return
        if self._waiting is None or self._waiting[0] != self.owned:
            self._waiting = (self.owned, now)  # each kind of wait starts its own clock
        # An owner whose daemon is silent may yet be adopted; a lost attempt only briefly (the
        # adopter writes slurm.json right after its claim).
        wait = self.adopt_wait if self.owned else ADOPT_GRACE_S
        if now - self._waiting[1] >= wait:
            self.gave_up = True

    def _follow(self, attempt: int, daemon: Any) -> None:
        """A daemon adopted this Slurm job as ``attempt``: hold that claim from now on."""
        try:
            data = (self.spool.attempts_dir(self.job_id) / f"{attempt}.claim").read_bytes()
        except OSError:
            return
        claim = self.claim
        # The one Claim object the pipeline's callbacks hold is re-pointed in place; it was
        # fenced (its attempt ended), and is owned again only if the new claim checks out.
        claim.attempt, claim.record, claim._data = attempt, json.loads(data), data
        claim._fenced = False
        self._content, self._changed = None, time.monotonic()
        self.progress.snapshot.update(attempt=attempt, daemon=claim.record.get("daemon"))
        self.progress.log(f"[attempt {attempt}] Slurm job {self.slurm_job_id} adopted by "
                          f"{daemon or claim.record.get('daemon')}")


class SlurmStop(wk.WorkerStop):
    """Stops at the next batch for a cancel or a Slurm stop (SIGTERM); pauses while the lease is
    stale or the attempt changes hands, and gives up (fenced) when nobody adopts the job."""

    def __init__(self, cancel_marker: Path, watch: LeaseWatch) -> None:
        super().__init__(cancel_marker)
        self.watch = watch

    def reason(self) -> str | None:
        why = super().reason()
        if why == "cancel" or self.watch.live():  # the common case: two attribute reads
            return why
        waited = self.watch.wait_live()
        if waited == "gone":
            raise wk.Fenced()
        return "cancel" if waited == "cancel" else super().reason()


try:  # submitit is an optional dependency (``pip install ktrdr-daemon[slurm]``)
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - depends on the installation
    _Checkpointable = object  # type: ignore[assignment,misc]


class SlurmAttempt(_Checkpointable):
    """What each Slurm job runs (pickled by submitit): resolve the attempt from ``slurm.json``,
    then run it through the worker's one code path with a lease for liveness.

    ``checkpoint`` is submitit's hook for the time-limit warning (USR2): the call is requeued as
    is, and the restart resumes from the epoch checkpoint the trainer keeps in the job folder.
    """

    def __init__(self, task: dict[str, Any], *, gpus: int, max_requeues: int,
                 adopt_wait: float) -> None:
        self.task, self.gpus = task, gpus
        self.max_requeues, self.adopt_wait = max_requeues, adopt_wait

    def __call__(self) -> int:
        import submitit

        from pipeline.device import describe_device, select_device

        slurm_job_id = submitit.JobEnvironment().job_id
        spool = sp.Spool(Path(self.task["spool_root"]))
        job_id = self.task["job_id"]
        record = read_record(spool, job_id) or {}
        if str(record.get("slurm_job_id")) != slurm_job_id:
            print(f"slurm.json names Slurm job {record.get('slurm_job_id')}, not this one "
                  f"({slurm_job_id}): exiting without running", flush=True)
            return wk.EXIT_FENCED
        attempt = int(record["attempt"])
        data = (spool.attempts_dir(job_id) / f"{attempt}.claim").read_bytes()
        device = describe_device(select_device("cuda" if self.gpus else "cpu"))["device"]
        task = wk.WorkerTask(**{**self.task, "attempt": attempt, "claim_data": data,
                                "host": socket.gethostname(), "device": device,
                                "executor": "slurm"})
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        if restarts > self.max_requeues:
            return _give_up(spool, task, restarts, self.max_requeues)
        watch = LeaseWatch(spool, job_id, slurm_job_id, task.t_fence, self.adopt_wait)
        stop = SlurmStop(spool.job_dir(job_id) / sp.CANCEL, watch)
        return wk.run_with(task, stop, watch)


def _give_up(spool: sp.Spool, task: wk.WorkerTask, restarts: int, limit: int) -> int:
    claim = sp.Claim(spool, task.job_id, task.attempt, task.claim_data, t_fence=float("inf"))
    error = {"message": f"Slurm restarted the job {restarts} times (preemption, time limit or "
                        f"requeue); the limit is {limit}", "where": "slurm"}
    if sp.write_result(spool, task.job_id, "failed", claim, error=error, device=task.device):
        mirror_result(spool.job_dir(task.job_id), spool.tmp, sp.read_result(spool, task.job_id))
    return wk.EXIT_DONE


# --- the daemon side ---------------------------------------------------------------------------


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """{id: (state, reason)} for the jobs slurmctld still knows, in one call; None when Slurm
    could not be asked (then nothing is decided on this round)."""
    if not job_ids:
        return {}
    try:
        done = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids),
                               "-o", "%i|%T|%r"], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("squeue failed: %s", exc)
        return None
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return {}  # none of them is known any more
        log.warning("squeue failed: %s", done.stderr.strip())
        return None
    states = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1].split()[0], parts[2])
    return states


def scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a mapping; empty when the job is no longer known."""
    try:
        done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields = {}
    for token in done.stdout.split():
        key, _, value = token.partition("=")
        fields.setdefault(key, value)
    return fields


def output_tail(job: Any, lines: int = 20) -> str:
    """The last lines of the Slurm job's stderr, then stdout (submitit's log files)."""
    parts = []
    for path in (job.paths.stderr, job.paths.stdout):
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - 16384))
                text = handle.read().decode(errors="replace")
        except OSError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        if tail:
            parts.append(f"--- {Path(path).name}\n{tail}")
    return "\n".join(parts)


class SlurmRun:
    """Stands in for the worker process of a daemon's ``Running`` entry: alive while Slurm holds
    the job; ``kill`` is ``scancel``; ``exitcode`` is a worker exit code once Slurm is done."""

    def __init__(self, backend: SlurmBackend, job_id: str, claim: sp.Claim, job: Any) -> None:
        self.backend, self.job_id, self.claim, self.job = backend, job_id, claim, job
        self.state, self.reason = "PENDING", ""
        self.exitcode: int | None = None
        self.cancel_sent = False
        self.misses = 0

    @property
    def pid(self) -> str:
        return f"Slurm job {self.job.job_id}" if self.job is not None else "no Slurm job"

    def is_alive(self) -> bool:
        return self.exitcode is None

    def kill(self) -> None:
        self.cancel_sent = True
        if self.job is not None:
            self.job.cancel(check=False)  # scancel

    def join(self, timeout: float | None = None) -> None:
        pass  # Slurm ends it; poll() notices


class SlurmBackend:
    """Submits, adopts and watches this daemon's Slurm jobs."""

    def __init__(self, options: SlurmOptions, spool: sp.Spool, daemon_id: str) -> None:
        if shutil.which("sbatch") is None:
            raise SystemExit("--executor slurm: no sbatch on PATH (run the daemon on a Slurm "
                             "login node)")
        import submitit  # noqa: F401  (fail now, not at the first job)

        self.options, self.spool, self.daemon_id = options, spool, daemon_id
        self.minutes = parse_time(options.time)

    def device_info(self) -> dict[str, Any]:
        """What the daemon advertises: its jobs' device, not the login node's."""
        where = f"Slurm partition {self.options.partition or '(default)'}"
        if self.options.gpus_per_job:
            return {"device": "cuda", "memory_bytes": None,
                    "name": f"{where}, {self.options.gpus_per_job} GPU(s) a job"}
        return {"device": "cpu", "memory_bytes": None, "name": f"{where}, CPU"}

    # -- start: submit, or adopt the Slurm job of a dead daemon's attempt ---------------------
    def start(self, job_id: str, claim: sp.Claim,
              task: wk.WorkerTask) -> tuple[SlurmRun, LeaseLine]:
        lease = LeaseLine(self.spool, job_id, claim.attempt)  # before the job can look for it
        folder = self.spool.job_dir(job_id) / FOLDER
        record = read_record(self.spool, job_id) or {}
        old = record.get("slurm_job_id")
        if old and int(record.get("attempt") or 0) < claim.attempt:
            state = (squeue_states([str(old)]) or {}).get(str(old), ("UNKNOWN", ""))[0]
            if state in QUEUED_STATES or state in RUNNING_STATES - {"COMPLETING"}:
                import submitit

                job = submitit.SlurmJob(folder=folder, job_id=str(old))
                write_record(self.spool, job_id, {
                    **record, "attempt": claim.attempt, "adopted_from": record.get("attempt"),
                    "adopted_by": self.daemon_id, "adopted_at": sp.utc_now()})
                _note(self.spool, job_id, f"[attempt {claim.attempt}] adopted Slurm job {old} "
                      f"({state}) of attempt {record.get('attempt')}")
                run = SlurmRun(self, job_id, claim, job)
                run.state = state
                return run, lease
        try:
            job = self._submit(folder, task)
        except Exception as exc:  # sbatch refused (bad partition, controller down): counts
            reason = f"Slurm refused the job: {str(exc).strip()[-500:]}"
            log.warning("%s: attempt %d failed: %s", job_id, claim.attempt, reason)
            claim.abandon(reason)
            _note(self.spool, job_id, f"[attempt {claim.attempt} failed] {reason}")
            run = SlurmRun(self, job_id, claim, None)
            run.exitcode = wk.EXIT_FENCED
            return run, lease
        write_record(self.spool, job_id, {
            "slurm_job_id": str(job.job_id), "attempt": claim.attempt,
            "submitted_at": sp.utc_now(), "daemon": self.daemon_id,
            "partition": self.options.partition, "gpus": self.options.gpus_per_job})
        _note(self.spool, job_id, f"[attempt {claim.attempt}] submitted as Slurm job {job.job_id}")
        return SlurmRun(self, job_id, claim, job), lease

    def _submit(self, folder: Path, task: wk.WorkerTask) -> Any:
        import submitit

        options = self.options
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues,
                                          python=options.python)
        parameters: dict[str, Any] = {
            "job_name": f"ktrdr:{task.job_id}", "time": self.minutes, "nodes": 1,
            "ntasks_per_node": 1, "cpus_per_task": max(1, task.threads),
            # the time-limit warning comes this long before the limit: time to checkpoint
            "signal_delay_s": min(120, max(10, self.minutes * 60 // 10)),
            "additional_parameters": {"requeue": True},
        }
        if options.partition:
            parameters["partition"] = options.partition
        if options.gpus_per_job:
            parameters["gpus_per_node"] = options.gpus_per_job
        executor.update_parameters(**parameters)
        fields = {k: v for k, v in asdict(task).items()
                  if k not in ("attempt", "claim_data", "host", "device", "executor")}
        return executor.submit(SlurmAttempt(fields, gpus=options.gpus_per_job,
                                            max_requeues=options.max_requeues,
                                            adopt_wait=options.adopt_wait))

    # -- every rescan: one squeue for all, then act on what changed ---------------------------
    def poll(self, runs: dict[str, SlurmRun]) -> None:
        live = {run.job.job_id: run for run in runs.values()
                if isinstance(run, SlurmRun) and run.exitcode is None}
        states = squeue_states(sorted(live))
        if states is None:
            return  # Slurm did not answer: decide nothing this round
        for slurm_id, run in live.items():
            if slurm_id in states:
                run.misses = 0
                state, reason = states[slurm_id]
            else:  # a fresh submission can lag; two misses in a row mean it is gone
                run.misses += 1
                if run.misses < 2:
                    continue
                state, reason = "VANISHED", "no longer known to slurmctld"
            if sp.is_cancel_requested(self.spool, run.job_id) and not run.cancel_sent:
                log.info("%s: cancel requested; scancel Slurm job %s", run.job_id, slurm_id)
                run.kill()
            if (state, reason) != (run.state, run.reason):
                run.state, run.reason = state, reason
                if state in QUEUED_STATES:
                    self._mirror_queued(run)
            if state in TERMINAL_STATES:
                run.exitcode = self._finish(run)

    def _mirror_queued(self, run: SlurmRun) -> None:
        """Pending in Slurm shows as ``queued`` in progress.json, with Slurm's state and reason."""
        message = f"Slurm job {run.job.job_id} {run.state}" + (
            f" ({run.reason})" if run.reason and run.reason != "None" else "")
        mirror_state(self.spool.job_dir(run.job_id), self.spool.tmp, "queued",
                     attempt=run.claim.attempt, daemon=self.daemon_id, message=message,
                     log_line=f"[slurm] {message}")

    def _finish(self, run: SlurmRun) -> int:
        """Slurm is done with the job: make the spool say how it ended; a worker exit code."""
        spool, job_id, claim = self.spool, run.job_id, run.claim
        if sp.read_result(spool, job_id) is not None:
            return wk.EXIT_DONE
        info = scontrol_job(run.job.job_id)
        state = info.get("JobState", run.state)
        if sp.is_cancel_requested(spool, job_id):
            if sp.write_result(spool, job_id, "cancelled", claim,
                               note=f"Slurm job {run.job.job_id} {state}"):
                self._mirror(job_id)
                return wk.EXIT_DONE
            return wk.EXIT_FENCED
        outcome = _outcome(run.job)
        if outcome == wk.EXIT_FENCED:
            return wk.EXIT_FENCED
        where = (f"Slurm job {run.job.job_id} {state}"
                 + (f" ({info['Reason']})" if info.get("Reason", "None") != "None" else "")
                 + (f", exit code {info['ExitCode']}" if info.get("ExitCode") else ""))
        if state in RETRY_STATES or (state == "COMPLETED" and outcome == wk.EXIT_HANDED_BACK):
            reason = f"{where}; the next attempt resumes from the checkpoint"
            log.warning("%s: attempt %d failed: %s", job_id, claim.attempt, reason)
            claim.abandon(reason)
            _note(spool, job_id, f"[attempt {claim.attempt} failed] {reason}")
            return wk.EXIT_FENCED
        error = {"message": f"{where}: the job did not finish", "where": "slurm",
                 "slurm_job_id": run.job.job_id, "slurm_state": state,
                 "output_tail": output_tail(run.job)}
        if sp.write_result(spool, job_id, "failed", claim, error=error):
            log.warning("%s: %s", job_id, error["message"])
            self._mirror(job_id)
            return wk.EXIT_DONE
        return wk.EXIT_FENCED

    def _mirror(self, job_id: str) -> None:
        result = sp.read_result(self.spool, job_id)
        if result is not None:
            mirror_result(self.spool.job_dir(job_id), self.spool.tmp, result)

    # -- adoption on reclaim --------------------------------------------------------------------
    def reclaim(self, spool: sp.Spool, found: sp.Reclaimable, me: sp.DaemonIdentity) -> bool:
        """End a dead daemon's attempt; one whose Slurm job lives on is ended without counting
        against ``max_attempts`` (its Slurm job is adopted by the next claim, see ``start``)."""
        record = read_record(spool, found.job_id) or {}
        slurm_id = record.get("slurm_job_id")
        alive = None
        if slurm_id and record.get("attempt") == found.attempt:
            state = (squeue_states([str(slurm_id)]) or {}).get(str(slurm_id), ("", ""))[0]
            alive = state if state in QUEUED_STATES | RUNNING_STATES else None
        if alive is None:
            return sp.reclaim(spool, found, me)
        end = {"attempt": found.attempt, "reason": f"{found.reason}; its Slurm job {slurm_id} "
               f"({alive}) is adopted", "counts": False, "by": me.daemon_id,
               "at": sp.utc_now(), "owner": found.record.get("daemon")}
        path = spool.attempts_dir(found.job_id) / f"{found.attempt}.end"
        return sp.publish_exclusive(spool.tmp, path, json.dumps(end).encode())


def _outcome(job: Any) -> int | None:
    """The worker exit code the Slurm job returned (submitit's result pickle), if any."""
    try:
        from submitit.core.utils import pickle_load

        kind, value = pickle_load(job.paths.result_pickle)
    except Exception:
        return None
    return value if kind == "success" and isinstance(value, int) else None


def _note(spool: sp.Spool, job_id: str, line: str) -> None:
    append_log(spool.job_dir(job_id), line)
