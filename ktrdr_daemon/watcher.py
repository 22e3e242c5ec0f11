"""Filesystem events that wake the daemon early. They are hints: the rescan is the truth.

inotify (watchdog's native observer) where the kernel sees every change; the polling observer
on network filesystems (NFS, SMB, sshfs...), where changes made by other hosts raise no event.
A handler error is logged and swallowed, and the daemon restarts an observer that died, so the
watcher never stops silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from watchdog.events import (
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from ktrdr_daemon import spool as sp

log = logging.getLogger("ktrdr_daemon.watcher")


class _BenignStopRace(logging.Filter):
    """watchdog logs an ERROR when an inotify event arrives while a watch is being removed (we
    unwatch a job's folder when its worker ends). The event is for a folder nobody watches any
    more, so nothing is lost; keep the alarming line out of the daemon's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_BenignStopRace())

# Filesystems where inotify only sees this host's own changes.
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
                       "fuse.sshfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs", "virtiofs"}


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (Linux ``/proc/mounts``), or None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target, best = str(path.resolve()), (None, "")
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[1]):
            best = (parts[2], mount_point)
    return best[0]


def choose_observer(spool_root: Path, requested: str) -> str:
    """``inotify`` or ``polling``; ``auto`` picks polling on a network filesystem."""
    if requested in ("inotify", "polling"):
        return requested
    fs = filesystem_type(spool_root)
    return "polling" if fs in NETWORK_FILESYSTEMS else "inotify"


def _native() -> Observer:
    """The platform's observer. On Linux with full events: a file renamed into ``incoming/``
    from outside it arrives as a move (no source) rather than a creation, so the rename is known
    complete at once instead of after :data:`spool.DROP_SETTLE_S` and the next rescan."""
    if Observer.__name__ == "InotifyObserver":
        _no_move_pairing_delay()
        return Observer(generate_full_events=True)
    return Observer()


def _no_move_pairing_delay() -> None:
    """Deliver inotify events without watchdog's wait for move pairs.

    watchdog holds an IN_MOVED_FROM up to ``InotifyMoveEventGrouper.delay`` (0.5 s) for its
    IN_MOVED_TO, and every later event queues behind it. Each accepted drop is such a move
    (``incoming/`` to ``jobs/<id>/``, which is not watched), so a drop that followed another
    within half a second was seen up to 0.5 s late (drop -> claim p99 182 ms). The daemon needs
    no pairs: a rename into ``incoming/`` is complete from its IN_MOVED_TO alone.
    """
    with contextlib.suppress(ImportError, AttributeError):
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

        InotifyMoveEventGrouper.delay = 0.0


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: SpoolWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self.watcher.on_event(event)
        except Exception:  # never let a handler error kill the observer thread
            log.exception("watcher: error while handling %s", event)


class SpoolWatcher:
    """Watches ``incoming/``, ``jobs/`` and each running job's folder (for cancel markers)."""

    def __init__(self, spool: sp.Spool, wake: threading.Event, requested: str = "auto") -> None:
        self.spool, self.wake = spool, wake
        self.kind = choose_observer(spool.root, requested)
        self._completed: set[Path] = set()
        self._lock = threading.Lock()
        self._job_watches: dict[str, object] = {}
        self.observer = self._new_observer()

    def _new_observer(self) -> Observer:
        observer = PollingObserver(timeout=0.5) if self.kind == "polling" else _native()
        handler = _Handler(self)
        observer.schedule(handler, str(self.spool.incoming), recursive=False)
        observer.schedule(handler, str(self.spool.jobs), recursive=False)
        self._handler = handler
        return observer

    def start(self) -> None:
        try:
            self.observer.start()
        except OSError as exc:  # e.g. inotify watch limit reached: fall back, say so
            log.warning("watcher: %s unavailable (%s); using polling", self.kind, exc)
            self.kind = "polling"
            self.observer = self._new_observer()
            self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=2)

    def ensure_alive(self) -> None:
        """Restart an observer whose thread died (the rescan keeps working meanwhile)."""
        if not self.observer.is_alive():
            log.error("watcher: the %s observer stopped; restarting it", self.kind)
            self._job_watches.clear()
            self.observer = self._new_observer()
            self.start()

    def watch_job(self, job_id: str) -> None:
        try:
            watch = self.observer.schedule(self._handler, str(self.spool.job_dir(job_id)),
                                           recursive=False)
            self._job_watches[job_id] = watch
        except OSError as exc:
            log.warning("watcher: cannot watch %s (%s); the rescan covers it", job_id, exc)

    def unwatch_job(self, job_id: str) -> None:
        watch = self._job_watches.pop(job_id, None)
        if watch is not None:
            with contextlib.suppress(KeyError, OSError):
                self.observer.unschedule(watch)

    def take_completed(self) -> set[Path]:
        """Drops an event proved complete: renamed in. Closing a file proves nothing (an
        `echo >>` sequence closes it after every line): those wait for the settle rule."""
        with self._lock:
            done, self._completed = self._completed, set()
        return done

    def on_event(self, event: FileSystemEvent) -> None:
        moved_in = isinstance(event, FileMovedEvent) and bool(event.dest_path)
        path = Path(os.fsdecode(event.dest_path if moved_in else event.src_path))
        if path.parent.parent == self.spool.jobs and path.name != sp.CANCEL:
            return  # a running job's own progress files: only its cancel marker matters here
        if moved_in and path.parent == self.spool.incoming and not sp.is_ignored_name(path.name):
            with self._lock:
                self._completed.add(path)
        self.wake.set()
