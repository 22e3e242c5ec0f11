"""The spool's layout: its folders and the names of a job's files, defined once (spec 1).

Every module that touches a job's files takes their names from here; nothing else spells
``result.json`` or ``attempts/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

State = Literal["queued", "running", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

# A job folder's files (spec 1).
SUBMITTED, JOB, RESULT, CANCEL = "submitted.yaml", "job.yaml", "result.json", "cancel"
ATTEMPTS = "attempts"
PROGRESS, EVENTS, LOG = "progress.json", "events.jsonl", "log.txt"
CHECKPOINT = "checkpoint"
# attempts/<n>.claim|beat|end|publish and attempts/retry.<n>.<k>.json
ATTEMPT_FILE = re.compile(r"(\d{1,9})\.(claim|beat|end|publish)")
RETRY_FILE = re.compile(r"retry\.(\d{1,9})\.(\d{1,9})\.json")

IGNORED_SUFFIXES = (".tmp", ".part", ".swp", "~")
DROP_SUFFIXES = (".yaml", ".yml")
# The spec's [A-Za-z0-9_.-]{1,64}, less a leading "." (hidden) or "-" (read as a CLI option).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def utc_now() -> str:
    """UTC ISO 8601 with microseconds and ``Z``: sorts as text, so FIFO order is string order."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def is_safe_name(name: str) -> bool:
    """A job or daemon id: ``[A-Za-z0-9_.-]{1,64}`` not starting with ``.`` or ``-``; as one
    path component without ``/`` or a leading dot it can never leave its folder."""
    return bool(_SAFE_NAME.fullmatch(name))


# --- 1. Layout -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spool:
    """A spool folder. Cheap to build; :meth:`ensure_layout` creates the folders once."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def daemons(self) -> Path:
        return self.root / "daemons"

    def ensure_layout(self) -> None:
        """Create the four folders; idempotent, safe for several daemons at once."""
        for folder in (self.incoming, self.tmp, self.jobs, self.daemons):
            folder.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        """``jobs/<job_id>``, refusing any id that could name something else (``..``, ``/``)."""
        if not is_safe_name(job_id):
            raise ValueError(f"not a job id: {job_id!r} (allowed: [A-Za-z0-9_.-]{{1,64}})")
        return self.jobs / job_id

    def attempts_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / ATTEMPTS
