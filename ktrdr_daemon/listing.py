"""``ls`` and ``show``: what is in the spool, read from its files alone, like ``cat``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon.cli_support import EXIT_FAILED, EXIT_OK, STATES, age, err, spool_from, unknown_job

LOG_TAIL_LINES = 20


# --- ls ---------------------------------------------------------------------------------------


def job_rows(spool: sp.Spool, state: str | None = None) -> list[dict[str, Any]]:
    """One row per job for ``ls``, from names and small JSON files only.

    The state comes from the spool's own rule (names, result.json, the open claim); job.yaml is
    not parsed (YAML is ~0.4 ms a job: seconds for 10,000): the age is its mtime, as it is
    created once at acceptance. Per job: a few stats, progress.json (a few hundred bytes) and,
    for a finished job, result.json; never the log, events or checkpoint.
    """
    now = time.time()
    rows = []
    for entry in sp.job_entries(spool):
        folder = Path(entry.path)
        names = sp.folder_names(folder)
        if sp.SUBMITTED not in names and sp.RESULT not in names:
            continue  # an acceptance in flight
        if state is not None and (sp.RESULT in names) != (state in sp.TERMINAL):
            continue
        info = sp.info_from_names(spool, entry.name, folder, names - {sp.JOB})
        if state is not None and info.state != state:
            continue
        progress = sp.read_json(folder / "progress.json") or {}
        try:
            submitted = os.stat(folder / (sp.JOB if sp.JOB in names else sp.SUBMITTED)).st_mtime
        except OSError:
            submitted = None
        rows.append({
            "id": info.id, "state": info.state, "accepted": sp.JOB in names,
            "percent": 100.0 if info.state == "completed" else progress.get("percent", 0.0),
            "epoch": progress.get("epoch"), "epochs": progress.get("epochs"),
            "device": progress.get("device"), "attempt": info.attempt,
            "daemon": info.daemon or progress.get("daemon"),
            "submitted_at": None if submitted is None else
            datetime.fromtimestamp(submitted, UTC).isoformat().replace("+00:00", "Z"),
            "age_seconds": None if submitted is None else round(now - submitted, 1),
            "cancel_requested": info.cancel_requested, "error": info.error,
        })
    if state in (None, "queued"):
        rows += _incoming_rows(spool, now)
    rows.sort(key=lambda r: (r["submitted_at"] or "", r["id"]))
    return rows


def _incoming_rows(spool: sp.Spool, now: float) -> list[dict[str, Any]]:
    """Drops no daemon has accepted yet: queued too, so `submit` then `ls` shows the job."""
    rows = []
    try:
        entries = list(os.scandir(spool.incoming))
    except FileNotFoundError:
        return rows
    for entry in entries:
        if sp.is_ignored_name(entry.name) or not entry.name.endswith(sp.DROP_SUFFIXES):
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # accepted since the listing
        rows.append({
            "id": entry.name.rsplit(".", 1)[0], "state": "queued", "accepted": False,
            "percent": 0.0, "epoch": None, "epochs": None, "device": None, "attempt": 0,
            "daemon": None, "submitted_at": datetime.fromtimestamp(mtime, UTC).isoformat()
            .replace("+00:00", "Z"), "age_seconds": round(now - mtime, 1),
            "cancel_requested": False, "error": None,
        })
    return rows


def cmd_ls(args: argparse.Namespace) -> int:
    """Jobs with state, progress, device, attempt and age, oldest first."""
    rows = job_rows(spool_from(args), args.state)
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    if not rows:
        print("no jobs" + (f" {args.state}" if args.state else ""))
        return EXIT_OK
    width = max(12, *(len(r["id"]) for r in rows))
    lines = [f"{'ID':<{width}}  {'STATE':<9}  {'PROGRESS':>8}  {'DEVICE':<7}  "
             f"{'ATTEMPT':>7}  {'AGE':>5}  NOTE"]
    for r in rows:
        note = ""
        if not r["accepted"] and r["state"] == "queued":
            note = "in incoming/: waiting for a daemon to accept it"
        elif r["state"] == "running" and r["epoch"] is not None:
            note = f"epoch {r['epoch']}/{r['epochs']} on {r['daemon']}"
        elif r["state"] == "running":
            note = f"on {r['daemon']}"
        elif r["error"]:
            note = r["error"].splitlines()[0][:80]
        if r["cancel_requested"] and r["state"] == "running":
            note = "cancel requested; " + note
        percent = f"{r['percent']:.1f}%" if isinstance(r["percent"], int | float) else "-"
        lines.append(f"{r['id']:<{width}}  {r['state']:<9}  {percent:>8}  "
                     f"{r['device'] or '-':<7}  {r['attempt']:>7}  "
                     f"{age(r['age_seconds']):>5}  {note}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


# --- show -------------------------------------------------------------------------------------


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines, reading only the end of the file (logs of long runs grow)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            block = min(size, 8192)
            while True:
                handle.seek(size - block)
                data = handle.read(block)
                if data.count(b"\n") > lines or block == size:
                    break
                block = min(size, block * 4)
    except OSError:
        return []
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-lines:]]


def cmd_show(args: argparse.Namespace) -> int:
    """One job: its spec, progress, result and the end of its log."""
    spool = spool_from(args)
    if (problem := unknown_job(spool, args.job_id)) is not None:
        err(problem)
        return EXIT_FAILED
    folder = spool.job_dir(args.job_id)
    info = sp.job_info(spool, args.job_id)
    job = sp.read_job(spool, args.job_id)
    data: dict[str, Any] = {
        "id": args.job_id, "state": info.state, "attempt": info.attempt, "daemon": info.daemon,
        "cancel_requested": info.cancel_requested, "folder": str(folder), "job": job,
        "progress": sp.read_json(folder / "progress.json"),
        "result": sp.read_result(spool, args.job_id),
        "log_tail": log_tail(folder / "log.txt"),
    }
    if job is None:  # never accepted: show what was dropped
        try:
            # Never open a FIFO or follow a link the user dropped: a bounded, regular-file read.
            raw = sp.read_bounded(folder / sp.SUBMITTED, 4000)
            data["submitted"] = raw.decode(errors="replace")
        except OSError:
            data["submitted"] = None
    if args.json:
        print(json.dumps(data, indent=1, default=str))
        return EXIT_OK
    import yaml

    out = [f"job {args.job_id}: {info.state}, attempt {info.attempt}"
           + (f" on {info.daemon}" if info.daemon else "")
           + (" (cancel requested)" if info.cancel_requested else ""), f"folder: {folder}", ""]
    if job is not None:
        out += ["spec (job.yaml):", _indent(yaml.safe_dump(job, sort_keys=False).rstrip())]
    else:
        out += ["dropped file (not accepted):", _indent(str(data.get("submitted") or "-"))]
    progress = data["progress"]
    if progress:
        line = f"{progress.get('percent', 0):.1f}% step {progress.get('step')}/" \
               f"{progress.get('steps')} {progress.get('phase') or ''}"
        if progress.get("epoch") is not None:
            line += f", epoch {progress['epoch']}/{progress.get('epochs')}"
        metrics = progress.get("metrics") or {}
        if metrics:
            line += ", " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                    if isinstance(v, int | float))
        out += ["", "progress:", _indent(line)]
    result = data["result"]
    if result:
        summary = {k: result[k] for k in ("state", "attempt", "daemon", "device", "finished_at",
                                          "model_path", "error", "cancelled_at") if k in result}
        test = (result.get("metrics") or {}).get("test") or {}
        summary.update({k: test[k] for k in ("test_accuracy", "f1", "directional_accuracy",
                                             "mae", "spearman_ic") if k in test})
        out += ["", "result:", _indent(yaml.safe_dump(summary, sort_keys=False).rstrip())]
    out += ["", f"log (last {LOG_TAIL_LINES} lines of {folder / 'log.txt'}):",
            _indent("\n".join(data["log_tail"]) or "(empty)")]
    print("\n".join(out))
    return EXIT_OK


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())




def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``ls`` and ``show`` on ``sub`` (argparse subparsers)."""
    p = sub.add_parser("ls", help="jobs with state, progress, device, attempt and age")
    p.add_argument("--state", choices=STATES, help="only jobs in this state")
    p.add_argument("--json", action="store_true", help="a JSON list of jobs")
    common(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="one job: spec, progress, result, log tail")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_show)
