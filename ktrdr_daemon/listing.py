"""``ls`` and ``show``: what is in the spool, read from its files alone, like ``cat``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    STATES,
    err,
    parse_time,
    spool_from,
    unknown_job,
)
from ktrdr_daemon.job_index import scan_jobs
from ktrdr_daemon.job_lines import read_job_tags
from ktrdr_daemon.safe_text import printable

LOG_TAIL_LINES = 20


# --- ls ---------------------------------------------------------------------------------------

LS_HELP = """\
Order: finished jobs first (oldest submitted first), then running jobs, then the queue in the
order daemons claim it (higher priority first, then first submitted: POS 1 is next), then
drops still in incoming/ that no daemon has accepted yet (POS -; they join the queue on
acceptance). PRI is the job file's priority (default 0). A summary line follows the table.
Notes fill the terminal's width (in full when the output is not a terminal).
Filters combine (a job must pass all): --state queued,running (or --state repeated),
--strategy NAME, --group NAME (the job file's group:, e.g. from submit --seeds), --since 2h,
1d or an ISO date such as 2026-12-01 (local time unless it says Z or +hh:mm)."""


@dataclass
class Filters:
    """What ``ls`` keeps; None keeps everything."""

    states: set[str] | None = None
    since: float | None = None  # submitted at or after (epoch seconds)
    strategies: set[str] | None = None
    groups: set[str] | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.states, self.since, self.strategies,
                                            self.groups))

    def state_may_match(self, terminal: bool) -> bool:
        """From names alone: a folder with result.json can only be terminal, and so on."""
        return self.states is None or any((s in sp.TERMINAL) == terminal for s in self.states)

    def keeps(self, tags: dict[str, Any]) -> bool:
        return ((self.strategies is None or tags["strategy"] in self.strategies)
                and (self.groups is None or tags["group"] in self.groups))


def job_rows(spool: sp.Spool, state: str | Filters | None = None) -> list[dict[str, Any]]:
    """One row per job for ``ls``, in the order of :data:`LS_HELP`, from names and small files.

    The state comes from the spool's own rule (names, result.json, the open claim); job.yaml is
    never parsed as YAML (~0.4 ms a job: seconds for 10,000): priority, strategy and group
    are read off its top-level lines (:func:`job_lines.read_job_tags`) and the age is its
    mtime, as it is created once at acceptance. The queue's order is the daemons' own
    (:func:`sp.queued_jobs`), which reads the header of queued jobs only. Per job: a few
    stats, job.yaml's bytes, progress.json and, for a finished job, result.json; never the
    log, events or checkpoint.
    """
    filters = state if isinstance(state, Filters) else Filters(None if state is None else {state})
    now = time.time()
    folders = scan_jobs(spool)
    wants_queue = filters.states is None or "queued" in filters.states
    queue = {} if not wants_queue else {
        info.id: (position, info) for position, info in
        enumerate(sp.queued_jobs(spool, folders), start=1)}
    rows = []
    for folder in folders:
        names = folder.names
        if sp.SUBMITTED not in names and sp.RESULT not in names:
            continue  # an acceptance in flight
        if not filters.state_may_match(sp.RESULT in names):
            continue
        path = Path(folder.path)
        spec = path / (sp.JOB if sp.JOB in names else sp.SUBMITTED)
        submitted = _mtime(spec)
        if filters.since is not None and (submitted is None or submitted < filters.since):
            continue
        position, queued = queue.get(folder.id, (None, None))
        # the queue's own reading of a queued job, else one from names (job.yaml not parsed)
        info = queued or sp.info_from_names(spool, folder.id, path, set(names) - {sp.JOB})
        if filters.states is not None and info.state not in filters.states:
            continue
        tags = read_job_tags(spec)
        if not filters.keeps(tags):
            continue
        progress = sp.read_json(path / "progress.json") or {}
        rows.append({
            "id": info.id, "state": info.state, "accepted": sp.JOB in names,
            "priority": queued.priority if queued is not None else tags["priority"],
            "queue_position": position if info.state == "queued" else None,
            "strategy": tags["strategy"], "group": tags["group"],
            "percent": 100.0 if info.state == "completed" else progress.get("percent", 0.0),
            "epoch": progress.get("epoch"), "epochs": progress.get("epochs"),
            "device": progress.get("device"), "attempt": info.attempt,
            "daemon": info.daemon or progress.get("daemon"),
            **_when(submitted, now),
            "cancel_requested": info.cancel_requested, "error": info.error,
        })
    if wants_queue:
        rows += _incoming_rows(spool, now, filters)
    rows.sort(key=_listing_order)
    return rows


_STAGE = {"completed": 0, "failed": 0, "cancelled": 0, "running": 1, "queued": 2}


def _listing_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """History, then what runs, then the queue in claim order, then drops not accepted yet."""
    position = row["queue_position"]
    stage = _STAGE[row["state"]] + (1 if row["state"] == "queued" and position is None else 0)
    return (stage, position or 0, row["submitted_at"] or "", row["id"])


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return None


def _when(submitted: float | None, now: float) -> dict[str, Any]:
    if submitted is None:
        return {"submitted_at": None, "age_seconds": None}
    return {"submitted_at": datetime.fromtimestamp(submitted, UTC).isoformat()
            .replace("+00:00", "Z"), "age_seconds": round(now - submitted, 1)}


def _incoming_rows(spool: sp.Spool, now: float, filters: Filters) -> list[dict[str, Any]]:
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
        if filters.since is not None and mtime < filters.since:
            continue
        tags = read_job_tags(Path(entry.path))
        if not filters.keeps(tags):
            continue
        rows.append({
            "id": entry.name.rsplit(".", 1)[0], "state": "queued", "accepted": False,
            "priority": tags["priority"], "queue_position": None,
            "strategy": tags["strategy"], "group": tags["group"],
            "percent": 0.0, "epoch": None, "epochs": None, "device": None, "attempt": 0,
            "daemon": None, **_when(mtime, now), "cancel_requested": False, "error": None,
        })
    return rows


def missing_spool(spool: sp.Spool) -> str | None:
    """Why ``spool`` is no spool at all (neither jobs/ nor incoming/), or None. An empty spool
    is a spool: it lists no jobs; a wrong path must not look like one."""
    if spool.jobs.is_dir() or spool.incoming.is_dir():
        return None
    what = "does not exist" if not spool.root.exists() else "has neither jobs/ nor incoming/"
    return (f"no spool at {spool.root}: it {what}. Point at yours with --spool DIR or "
            "KTRDR_SPOOL=DIR, or create this one with `ktrdr-daemon doctor --fix`")


def cmd_ls(args: argparse.Namespace) -> int:
    """Jobs with state, priority, queue position, progress, device, attempt and age."""
    spool = spool_from(args)
    if (problem := missing_spool(spool)) is not None:
        err(problem)
        return EXIT_FAILED
    filters = Filters(
        states=set(args.state) if args.state else None, since=args.since,
        strategies=set(args.strategy) if args.strategy else None,
        groups=set(args.group) if args.group else None)
    rows = job_rows(spool, filters)
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    if not rows:
        print("no jobs" + (f" match {_described(args)}" if filters else ""))
        return EXIT_OK
    from ktrdr_daemon import listing_view as view

    sys.stdout.write(view.render_table(rows, colour=view.use_colour(args.color, sys.stdout),
                                       width=view.terminal_width(sys.stdout),
                                       filtered=bool(filters)))
    return EXIT_OK


def _described(args: argparse.Namespace) -> str:
    given = [(flag, getattr(args, name)) for flag, name in (
        ("--state", "state"), ("--strategy", "strategy"), ("--group", "group"))]
    words = [f"{flag} {','.join(values)}" for flag, values in given if values]
    if args.since is not None:
        words.append(f"--since {args.since_text}")
    return printable(" ".join(words))


def _names(allowed: tuple[str, ...] | None = None) -> Callable[[str], list[str]]:
    """An argparse type: ``a,b`` -> [a, b] (with action=extend, repeats add up)."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentTypeError("expected a name (or several, comma-separated)")
        bad = [n for n in names if allowed is not None and n not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{', '.join(map(repr, bad))}: not a state; states: {', '.join(allowed or ())}")
        return names

    return parse


class _Since(argparse.Action):
    """``--since 2h`` / ``1d12h`` (an age) or ``2026-12-01[T09:30]`` (a date): epoch seconds."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from ktrdr_daemon.commands import parse_duration

        text = str(values)
        try:
            since = time.time() - parse_duration(text)
        except argparse.ArgumentTypeError:
            since = parse_time(text)
        if since is None:
            parser.error(f"argument --since: {text!r} is neither an age (30m, 2h, 1d) nor a "
                         "date (2026-12-01 or 2026-12-01T09:30)")
        setattr(namespace, self.dest, since)
        namespace.since_text = text


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
    problem = missing_spool(spool) or unknown_job(spool, args.job_id)
    if problem is not None:
        err(problem)
        return EXIT_FAILED
    folder = spool.job_dir(args.job_id)
    info = sp.job_info(spool, args.job_id)
    job = sp.read_job(spool, args.job_id)
    queue = sp.queued_jobs_in_order(spool) if info.state == "queued" else []
    data: dict[str, Any] = {
        "id": args.job_id, "state": info.state, "attempt": info.attempt, "daemon": info.daemon,
        "priority": info.priority,
        "queue_position": queue.index(args.job_id) + 1 if args.job_id in queue else None,
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

    position = data["queue_position"]
    out = [f"job {args.job_id}: {info.state}, attempt {info.attempt}, priority {info.priority}"
           + (f", position {position} in the queue" if position else "")
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
    print(printable("\n".join(out)))  # every line above may hold bytes from the spool
    return EXIT_OK


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())




def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``ls`` and ``show`` on ``sub`` (argparse subparsers)."""
    p = sub.add_parser("ls", help="jobs: state, priority, queue position, progress, age",
                       description=LS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", action="extend", type=_names(STATES), metavar="STATE[,STATE]",
                   help=f"only jobs in these states ({', '.join(STATES)}); repeatable")
    p.add_argument("--strategy", action="extend", type=_names(), metavar="NAME",
                   help="only jobs of this strategy (its name or file stem); repeatable")
    p.add_argument("--group", action="extend", type=_names(), metavar="NAME",
                   help="only jobs of this group (the job file's group:); repeatable")
    p.add_argument("--since", action=_Since, metavar="AGE|DATE",
                   help="only jobs submitted in the last AGE (2h, 1d) or since DATE")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the states: auto = on a terminal unless NO_COLOR is set")
    p.add_argument("--json", action="store_true",
                   help="a JSON list of jobs (with priority, queue_position, strategy, group)")
    common(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="one job: spec, progress, result, log tail")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_show)
