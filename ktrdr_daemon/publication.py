"""Publish, then result: settling a job whose attempt may have published a version.

A worker records ``attempts/<n>.publish`` (where it publishes, for which submission), renames
the version into the model store, then writes ``result.json``. An attempt that ends between the
rename and the result (killed, frozen then reclaimed, fenced) leaves a version no result names.
:func:`settle` finishes that transition for whoever finds it, the same way every time:

- the job was cancelled: the version is withdrawn and the job ends ``cancelled``;
- otherwise the job ends ``completed`` with that version (the attempt's work is done);
- no version (the attempt died before its rename): the intent is dropped, the job is queued.

A version is found by what it records (job id *and* submission, in its metadata.json), never by
a job's name alone: a name that ``clean`` made reusable never adopts an older job's model.

The daemon itself stays free of torch: the model store is read and changed here as plain
files and folders, by the store's own rules (see :func:`withdraw`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon.atomic import read_json
from pipeline.versions import take_out

log = logging.getLogger("ktrdr_daemon")

_VERSION = re.compile(r".+_v\d+")


def submission_of(job: dict[str, Any]) -> str:
    """What tells this submission from an earlier one of the same name (older job.yaml files
    have no ``submission``: their submit time, to the microsecond, stands in)."""
    return str(job.get("submission") or job.get("submitted_at") or "")


def provenance(job_id: str, job: dict[str, Any], attempt: int) -> dict[str, Any]:
    """What a worker writes into its version's metadata.json."""
    return {"job_id": job_id, "submission": submission_of(job), "attempt": attempt}


def versions_of(spool: sp.Spool, job_id: str) -> list[Path]:
    """Versions this submission of ``job_id`` published, looked up where its intents say."""
    job = sp.read_job(spool, job_id) or {}
    submission = submission_of(job)
    found: set[Path] = set()
    for intent in sp.publish_intents(spool, job_id):
        folder = intent.get("strategy_dir")
        if not isinstance(folder, str):
            continue
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not _VERSION.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            meta = _json(Path(entry.path) / "metadata.json")
            if meta.get("job_id") == job_id and meta.get("submission") == submission:
                found.add(Path(entry.path))
    return sorted(found, key=lambda p: (p.parent, _number(p)))


def settle(spool: sp.Spool, job_id: str) -> str:
    """Finish the publish-then-result transition of a job with no open attempt; returns the
    job's state after it. Safe in several daemons at once: result.json decides, and every
    settler withdraws exactly the versions the result does not name. The window left: a settler
    that saw no cancel completes the job while another, a moment later, saw one and withdrew
    the version; it needs a cancel between two daemons' looks a few microseconds apart."""
    if sp.has_open_attempt(spool, job_id):
        return "running"
    versions = versions_of(spool, job_id)
    result = sp.read_result(spool, job_id)
    if result is None:
        attempt = max((int(i.get("attempt") or 0) for i in sp.publish_intents(spool, job_id)),
                      default=0)
        if sp.is_cancel_requested(spool, job_id):
            # Out of sight first (one rename each), then the result: no reader ever sees a
            # cancelled job beside its version.
            for version in versions:
                withdraw(version, f"{job_id} was cancelled")
            note = "a version published before the cancel was withdrawn" if versions else None
            sp.write_result(spool, job_id, "cancelled", attempt=attempt,
                            **({"note": note} if note else {}))
            versions = [v for v in versions if v.exists()]
        elif versions:
            version = versions[-1]
            metrics = _json(version / "metrics.json")
            sp.write_result(
                spool, job_id, "completed", attempt=attempt, model_path=str(version),
                metrics={"test": metrics.get("test"),
                         "training": {k: v for k, v in (metrics.get("training") or {}).items()
                                      if k != "history"}},
                device=_json(version / "metadata.json").get("device"),
                note=f"attempt {attempt} published this version and ended before writing "
                     "its result")
        else:
            sp.clear_publish_intents(spool, job_id)
            return "queued"
        result = sp.read_result(spool, job_id) or {}
    keep = result.get("model_path") if result.get("state") == "completed" else None
    for version in versions:
        if str(version) != keep:
            withdraw(version, f"{job_id} ended {result.get('state')}")
    sp.clear_publish_intents(spool, job_id)
    return str(result.get("state"))


def withdraw(version: Path, why: str) -> None:
    """Remove a version no completed job names (spec 6: no version for a cancelled job), by
    the store's own rule (:func:`pipeline.versions.take_out`, which needs no torch)."""
    if re.fullmatch(r".+_v\d+", version.name) is None:
        return
    if take_out(version, f"withdrawn-{secrets.token_hex(8)}"):
        log.warning("withdrew model version %s: %s", version, why)


def remove_staging_of(models_root: Path, pid: int) -> int:
    """Remove the model store's staging folders of a dead worker (named ``...-<pid>-<hex>``);
    returns how many. Only the worker's own daemon calls this, right after reaping it, so the
    pid cannot belong to a live writer on this host."""
    staging = models_root / ".staging"
    pattern = re.compile(rf".+-{pid}-[0-9a-f]{{32}}")
    removed = 0
    try:
        entries = list(os.scandir(staging))
    except OSError:
        return 0
    for entry in entries:
        if pattern.fullmatch(entry.name):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _number(path: Path) -> int:
    return int(path.name.rsplit("_v", 1)[1])


def _json(path: Path) -> dict[str, Any]:
    """A version's JSON document (metrics.json holds the whole history: a generous bound)."""
    return read_json(path, 1 << 24) or {}
