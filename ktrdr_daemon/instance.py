"""One daemon per identity, an identity being a daemon id on one spool (spool spec 3.8).

A local lock (never on the shared spool) named for the id and the spool's real path makes a
second copy exit clearly, and daemons on other spools never conflict. The lock lives in
XDG_RUNTIME_DIR, which two shells may set differently: so the spool is asked too, and a live
heartbeat of this id from another process refuses the start. No pid files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ktrdr_daemon import spool as sp


class AlreadyRunning(SystemExit):
    """Another copy of this daemon id serves this spool."""


def one_daemon_per_identity(spool: sp.Spool, daemon_id: str, heartbeat_s: float) -> FileLock:
    """The held lock (release it at exit), or :class:`AlreadyRunning` with the reason."""
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / "ktrdr-daemon"
    folder.mkdir(parents=True, exist_ok=True)
    spool_key = hashlib.sha256(os.fsencode(os.path.realpath(spool.root))).hexdigest()
    lock = FileLock(folder / f"{daemon_id}.{spool_key[:16]}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AlreadyRunning(
            f"daemon {daemon_id!r} is already running on this host for {spool.root} "
            f"(lock {lock.lock_file}); give this one another --daemon-id") from None
    try:
        _refuse_live_twin(spool, daemon_id, heartbeat_s)
    except BaseException:
        lock.release()
        raise
    return lock


def _refuse_live_twin(spool: sp.Spool, daemon_id: str, heartbeat_s: float) -> None:
    """Exit when ``daemons/<id>.json`` belongs to another live process: on this host its pid
    says so at once; from another host, its counter changing over two heartbeats."""
    path = spool.daemons / f"{daemon_id}.json"
    record = sp.read_json(path)
    if record is None or record.get("pid") == os.getpid():
        return
    judge = sp.LivenessJudge(sp.DaemonIdentity.current(daemon_id), float("inf"))
    if judge.same_host(record):
        alive = judge.death("twin", record, None) is None
    else:
        time.sleep(2.5 * heartbeat_s)
        later = sp.read_json(path) or {}
        alive = later.get("beat") != record.get("beat")
    if alive:
        raise AlreadyRunning(
            f"daemon {daemon_id!r} is already serving {spool.root} (pid {record.get('pid')} on "
            f"{record.get('host')}); give this one another --daemon-id")
