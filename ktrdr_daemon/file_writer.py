"""A job's files written on a thread of their own, so training never waits on the disk.

A running job replaces ``progress.json`` and its checkpoint after every epoch. Each atomic
replace (write a temporary file, rename it over the old one) costs ~0.3 ms on ext4, which starts
writing the new file's blocks at the rename (``auto_da_alloc``): with epochs of 50-100 ms that
alone was ~1 % of a job. The training thread hands the bytes over and goes on; this thread does
the system calls, which release the GIL, on the other core. What it still costs training is the
GIL: each system call gives it up and takes it back, and the worker shortens the interpreter's
switch interval so the training thread gets it back sooner (``worker.SWITCH_INTERVAL_S``).
``bench.bench_overhead`` measures that as the training thread's time off the CPU.

Wake-ups are few: an epoch hands over a burst (a log line, an event, progress.json, the
checkpoint), and each wake-up of a waiting thread cost the training thread ~30 us of CPU (a
futex call, then the woken thread asking for the GIL). So only the first item of a burst wakes
the thread, which then lingers :data:`LINGER_S` (the GIL released) for the rest of the burst
and writes it all in one go. Nothing here is read faster than that: readers poll or tail.

Order is kept: files are written in the order they were handed over. A replace supersedes a
pending replace of the same file in its place in the queue (only the latest snapshot matters).
:meth:`FileWriter.flush` waits until everything handed over is on disk, and raises the first
error (a full disk) in the caller's thread, so failures still fail the attempt, one write later
than before at most.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

Data = bytes | Callable[[], bytes]  # the bytes, or how to make them (then done on the thread)
LINGER_S = 0.003  # how long a woken thread waits for the rest of a burst before writing it


class FileWriter:
    """Replaces and appends, done in order on one background thread."""

    def __init__(self, tmp_dir: Path, name: str = "job-files") -> None:
        self.tmp_dir = tmp_dir
        self._pending: deque[tuple[str, Path, Data]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = False  # the thread waits for work: the next item must wake it
        self._hurry = False  # someone waits for a flush: no lingering
        self._closed = False
        self._error: BaseException | None = None
        self._appending: dict[Path, int] = {}  # path -> file descriptor opened O_APPEND
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------------
    def replace(self, path: Path, data: Data) -> None:
        """Atomically replace ``path`` with ``data`` (readers see the old or the new file).

        ``data`` may be a function that makes the bytes (serializing a checkpoint): it then
        runs on the writing thread, and only if no newer replace of ``path`` supersedes it."""
        with self._cond:
            self._raise_error()
            for index, (kind, pending, _) in enumerate(self._pending):
                if kind == "replace" and pending == path:
                    # Superseded: only the latest snapshot matters. It takes the old one's place,
                    # so it is never written later than that one would have been (a checkpoint
                    # does not fall behind the log lines queued after it).
                    self._pending[index] = ("replace", path, data)
                    return
            self._pending.append(("replace", path, data))
            self._wake()

    def append(self, path: Path, data: bytes) -> None:
        """Append ``data`` to ``path`` (created if missing)."""
        with self._cond:
            self._raise_error()
            self._pending.append(("append", path, data))
            self._wake()

    def flush(self) -> None:
        """Wait until everything handed over is written; raise the first write error."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()
            while (self._pending or self._busy) and self._error is None:
                self._cond.wait()
            self._hurry = False
            self._raise_error()

    def close(self) -> None:
        """Flush, stop the thread and close the files kept open for appending."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify()
            self._thread.join()
            for fd in self._appending.values():
                os.close(fd)
            self._appending.clear()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        """Under the lock: wake the thread if it waits for work (only once per burst)."""
        if self._waiting:
            self._waiting = False
            self._cond.notify_all()

    # -- the writing thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._waiting = True
                    while self._waiting and not self._closed and not self._hurry:
                        self._cond.wait()
                    self._waiting = False
                    # Woken by the first item of a burst: let the rest of it arrive.
                    self._cond.wait_for(lambda: self._closed or self._hurry, LINGER_S)
                if not self._pending:
                    if self._closed:
                        return  # closed and drained
                    continue
                batch = list(self._pending)  # taken at once: one lock round trip per burst
                self._pending.clear()
                self._busy = True
            try:
                for kind, path, data in batch:
                    if kind == "replace":
                        self._replace(path, data() if callable(data) else data)
                    else:
                        self._append(path, data)  # type: ignore[arg-type]
            except BaseException as error:  # kept for the caller: flush() raises it
                with self._cond:
                    self._error = self._error or error
                    self._pending.clear()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _replace(self, path: Path, data: bytes) -> None:
        # No fsync: these files are refreshed every epoch; durability is for results.
        # Bare system calls: each one lets the training thread have the GIL and takes it back,
        # so the fewer (no buffered file object, no fstat) the less it waits for this thread.
        tmp = f"{self.tmp_dir}/{path.parent.name}.{path.name}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # spool/tmp removed under a running job: re-create it
            os.makedirs(self.tmp_dir, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _append(self, path: Path, data: bytes) -> None:
        fd = self._appending.get(path)
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._appending[path] = fd
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
