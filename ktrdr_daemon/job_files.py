"""A job folder's mirror files as the daemon and the commands write them (spool spec 5).

``result.json`` (through :mod:`ktrdr_daemon.spool`) is the truth; ``progress.json``,
``events.jsonl`` and ``log.txt`` mirror it for readers. While a worker runs, its
:class:`~ktrdr_daemon.progress.ProgressWriter` keeps them; outside a worker (a drop that failed
validation, a retry, a job pending in Slurm, a settled publish) this module is their only
writer: one atomic replace for ``progress.json``, one append for the logs, names from
:mod:`ktrdr_daemon.layout`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ktrdr_daemon.atomic import atomic_write, read_json
from ktrdr_daemon.layout import EVENTS, LOG, PROGRESS, utc_now
from pipeline.events import STEPS

SCHEMA = 1


def write_atomic(tmp_dir: Path, path: Path, data: bytes) -> None:
    """Replace ``path`` so readers see the old or the new file, never half of one. No fsync:
    progress is a hint refreshed many times a second; durability is for results."""
    atomic_write(tmp_dir, path, data, durable=False)


def initial_snapshot(job_id: str, attempt: int = 0, daemon: str | None = None,
                     host: str | None = None, device: str | None = None) -> dict[str, Any]:
    """A ``progress.json`` with every field of the schema (spool spec section 5)."""
    now = utc_now()
    return {
        "schema": SCHEMA, "job_id": job_id, "state": "queued", "attempt": attempt,
        "daemon": daemon, "host": host, "device": device,
        "step": 0, "steps": len(STEPS), "phase": None, "message": None,
        "epoch": None, "epochs": None, "batch": None, "batches": None,
        "percent": 0.0, "eta_seconds": None, "metrics": {}, "best": None,
        "warnings": [], "started_at": now, "updated_at": now,
        "model_path": None, "error": None,
    }


def read_progress(job_dir: Path) -> dict[str, Any] | None:
    return read_json(job_dir / PROGRESS)


def append_log(job_dir: Path, line: str) -> None:
    """Add one line to a job's ``log.txt``; a note that cannot be written is not worth failing
    the caller (the daemon's loop, a Slurm poll) over."""
    with contextlib.suppress(OSError), open(job_dir / LOG, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def append_event(job_dir: Path, event: dict[str, Any]) -> None:
    with contextlib.suppress(OSError), open(job_dir / EVENTS, "a", encoding="utf-8") as events:
        events.write(json.dumps({"at": utc_now(), **event}, default=str) + "\n")


def mirror_state(job_dir: Path, tmp_dir: Path, state: str, *, attempt: int = 0,
                 log_line: str | None = None, **fields: Any) -> bool:
    """Make ``progress.json`` say ``state`` (with ``fields``) and log it; False when it said so
    already (nothing written)."""
    snapshot = read_progress(job_dir) or initial_snapshot(job_dir.name, attempt)
    if snapshot.get("state") == state and all(snapshot.get(k) == v for k, v in fields.items()):
        return False
    snapshot.update(state=state, updated_at=utc_now(), **fields)
    try:
        write_atomic(tmp_dir, job_dir / PROGRESS, json.dumps(snapshot, separators=(",", ":"))
                     .encode())
    except OSError:
        return False
    if log_line is not None:
        append_log(job_dir, log_line)
    return True


def mirror_result(job_dir: Path, tmp_dir: Path, result: dict[str, Any]) -> None:
    """Make the mirror files agree with a ``result.json`` the daemon (or a command) wrote
    itself: validation failed, gave up, cancelled while queued, settled after a crash."""
    state = str(result.get("state"))
    if (read_progress(job_dir) or {}).get("state") == state:
        return
    fields = {k: result[k] for k in ("error", "model_path", "attempt") if k in result}
    message = (result.get("error") or {}).get("message")
    if mirror_state(job_dir, tmp_dir, state, log_line=f"[{state}]" + (
            f" {message}" if message else ""), **fields):
        append_event(job_dir, {"type": "state", "state": state, **fields})
