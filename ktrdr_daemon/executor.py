"""Where an attempt runs: one interface, two implementations (local worker processes, Slurm).

The daemon's loop knows only this interface:

    prepare()          prove the device; returns what the daemon advertises
    start(task, claim) run one claimed attempt; returns its handle and its lifeline
    poll(runs)         learn what changed (a worker's exit is seen by ``handle.is_alive()``)
    cancel(run)        stop it now (kill, or scancel)
    outlives(runs)     the attempts that go on without the daemon when it stops (Slurm jobs:
                       the next daemon adopts them); the rest are handed back
    reclaim(...)       end a dead owner's attempt (Slurm: adopt a job that still runs)
    after_crash(run)   clean what a crashed attempt left behind
    keep_ready()       prepare the next start ahead of time (a spare worker)
    close()

A handle looks like a ``multiprocessing.Process`` (``is_alive``, ``exitcode``, ``kill``, ``join``,
``pid``); a lifeline takes the daemon's messages (``send("tick" | "handback")``, ``close``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import threading
from collections.abc import Callable
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from ktrdr_daemon import publication
from ktrdr_daemon import spool as sp
from ktrdr_daemon import worker as wk
from pipeline.errors import PipelineError

log = logging.getLogger("ktrdr_daemon")


class Handle(Protocol):
    """A running attempt, as the loop sees it."""

    pid: Any
    exitcode: int | None

    def is_alive(self) -> bool: ...

    def kill(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class Lifeline(Protocol):
    def send(self, message: Any) -> None: ...

    def close(self) -> None: ...


class Executor(Protocol):
    kind: str

    def prepare(self) -> dict[str, Any]: ...

    def start(self, task: wk.WorkerTask, claim: sp.Claim) -> tuple[Handle, Lifeline]: ...

    def poll(self, runs: dict[str, Any]) -> None: ...

    def cancel(self, handle: Handle) -> None: ...

    def outlives(self, job_ids: list[str]) -> list[str]: ...

    def reclaim(self, spool: sp.Spool, found: sp.Reclaimable, me: sp.DaemonIdentity) -> bool: ...

    def after_crash(self, handle: Handle) -> None: ...

    def keep_ready(self) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Each attempt is a child process of a fork server that imported torch and the pipeline
    once; one worker is kept forked ahead, so a claimed job starts at once."""

    kind = "local"

    def __init__(self, device: str, models_root: Path, on_exit: Callable[[], None]) -> None:
        self.device, self.models_root, self.on_exit = device, models_root, on_exit
        self.spare: tuple[Any, Connection] | None = None  # a worker forked ahead, and its pipe
        self.closed = False

    def prepare(self) -> dict[str, Any]:
        # The device is proven in a child of the fork server (a real allocation), so the daemon
        # never loads torch. ensure_running returns before the server is ready (seconds on a
        # busy box); the first worker would wait for it between its claim and its start, and a
        # claim not beaten for t_fence is fenced: the probe also makes "serving" mean ready.
        self.context = mp.get_context("forkserver")
        self.context.set_forkserver_preload(["ktrdr_daemon.preload"])
        forkserver.ensure_running()
        device = self._probe_device()
        self.keep_ready()  # the first claim already finds a worker waiting
        return device

    def _probe_device(self) -> dict[str, Any]:
        reader, writer = self.context.Pipe(duplex=False)
        probe = self.context.Process(target=wk.probe_device, args=(self.device, writer),
                                     name="ktrdr-device-probe")
        probe.start()
        writer.close()
        try:
            status, value = reader.recv()
        except EOFError:
            probe.join()
            raise PipelineError(f"the device probe for {self.device!r} "
                                f"{describe_exit(probe.exitcode)}") from None
        finally:
            reader.close()
        probe.join()
        if status != "ok":
            raise PipelineError(value)
        return value

    def start(self, task: wk.WorkerTask, claim: sp.Claim) -> tuple[Handle, Lifeline]:
        """The spare worker, handed ``task`` through its lifeline; a fresh fork if there is
        none (or it died). A worker's exit makes no file event: a thread wakes the loop."""
        process, writer = self._worker_for(task)
        threading.Thread(target=self._wake_on_exit, args=(process.sentinel,),
                         name=f"exit:{task.job_id}", daemon=True).start()
        return process, writer

    def _worker_for(self, task: wk.WorkerTask) -> tuple[Any, Connection]:
        spare, self.spare = self.spare, None
        if spare is not None:
            process, writer = spare
            try:
                writer.send(task)
                return process, writer
            except OSError:  # it died since it was forked: fork one now
                _stop_spare(spare)
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=wk.run_attempt, args=(task, reader),
                                       name=f"ktrdr-worker:{task.job_id}", daemon=False)
        process.start()
        reader.close()
        return process, writer

    def _wake_on_exit(self, sentinel: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            wait([sentinel])
        self.on_exit()

    def poll(self, runs: dict[str, Any]) -> None:
        pass  # a process says itself whether it is alive

    def cancel(self, handle: Handle) -> None:
        handle.kill()
        handle.join()

    def outlives(self, job_ids: list[str]) -> list[str]:
        return []  # workers die with their daemon: hand them all back

    def reclaim(self, spool: sp.Spool, found: sp.Reclaimable, me: sp.DaemonIdentity) -> bool:
        return sp.reclaim(spool, found, me)

    def after_crash(self, handle: Handle) -> None:
        """A killed worker may have left a half-written version in the store's staging."""
        if isinstance(handle.pid, int):
            publication.remove_staging_of(self.models_root, handle.pid)

    def keep_ready(self) -> None:
        """Keep one worker forked ahead (worker.run_spare). Forking it takes the fork server
        ~10-20 ms, here, after the claims, not before a job."""
        if self.closed:
            return
        if self.spare is not None:
            if self.spare[0].is_alive():
                return
            _stop_spare(self.spare)  # killed from outside: replace it
            self.spare = None
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=wk.run_spare, args=(reader,),
                                       name="ktrdr-worker:spare", daemon=False)
        try:
            process.start()
        except OSError as exc:  # no processes or descriptors left: fork on demand instead
            log.warning("could not fork a spare worker: %s", exc)
            writer.close()
            return
        finally:
            reader.close()
        self.spare = (process, writer)

    def close(self) -> None:
        self.closed = True
        if self.spare is not None:
            _stop_spare(self.spare)
            self.spare = None


class SlurmExecutor:
    """Each attempt is a Slurm job (:mod:`ktrdr_daemon.slurm`); its lease file stands in for
    the lifeline, and a Slurm job outlives its daemon (the next one adopts it)."""

    kind = "slurm"

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def prepare(self) -> dict[str, Any]:
        return self.backend.device_info()  # jobs prove their device on the nodes

    def start(self, task: wk.WorkerTask, claim: sp.Claim) -> tuple[Handle, Lifeline]:
        return self.backend.start(task.job_id, claim, task)

    def poll(self, runs: dict[str, Any]) -> None:
        self.backend.poll({job_id: run.process for job_id, run in runs.items()})

    def cancel(self, handle: Handle) -> None:
        handle.kill()  # scancel; poll() sees the end

    def outlives(self, job_ids: list[str]) -> list[str]:
        for job_id in job_ids:
            log.info("%s: left running in Slurm for the next daemon to adopt", job_id)
        return list(job_ids)

    def reclaim(self, spool: sp.Spool, found: sp.Reclaimable, me: sp.DaemonIdentity) -> bool:
        return self.backend.reclaim(spool, found, me)

    def after_crash(self, handle: Handle) -> None:
        pass  # the node's staging is its own; the store's clean-up sees it by age

    def keep_ready(self) -> None:
        pass

    def close(self) -> None:
        pass


def describe_exit(code: int | None) -> str:
    import signal

    if code is None:
        return "did not exit"
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"


def _stop_spare(spare: tuple[Any, Connection]) -> None:
    """End an unused spare worker: its pipe closing makes it exit; kill it if it does not."""
    process, writer = spare
    writer.close()
    process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join()
