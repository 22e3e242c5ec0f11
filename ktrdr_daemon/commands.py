"""The steering commands of ``ktrdr-daemon`` (spool spec section 7): ``tail``, ``cancel``,
``retry``, ``daemons`` and ``clean``; ``ls``/``show`` live in listing.py, ``doctor`` in doctor.py.

They work from the spool's files alone, like ``cat`` would: no daemon needs to be running,
and nothing here asks one anything. Each command is a plain function of its parsed
arguments returning the exit status; :func:`add_commands` registers them all.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon.cli_support import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    age,
    err,
    parse_time,
    settings_from,
    spool_from,
    unknown_job,
)
from ktrdr_daemon.safe_text import printable
from ktrdr_daemon.settings import Settings

# --- tail -------------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow a job until it ends; exit 0 completed, 1 failed, 2 cancelled, 130 on Ctrl-C."""
    spool = spool_from(args)
    if (problem := unknown_job(spool, args.job_id, submitted_ok=True)) is not None:
        err(problem)
        return EXIT_FAILED
    try:  # the imports too: a Ctrl-C while they load is the same interrupt
        from ktrdr_daemon import tailing

        if args.json:
            state = tailing.follow_json(spool, args.job_id, sys.stdout)
        else:
            from rich.console import Console

            state = tailing.follow(spool, args.job_id, Console(highlight=False),
                                   show_log=not args.no_log)
    except KeyboardInterrupt:
        print("stopped following; the job goes on", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LookupError as exc:
        err(str(exc))
        return EXIT_FAILED
    return tailing.EXIT_CODES.get(state, EXIT_FAILED)


# --- cancel, retry ----------------------------------------------------------------------------

CANCELLABLE, RETRYABLE = ("queued", "running"), ("failed", "cancelled")


def _selected(args: argparse.Namespace,
              applies_to: tuple[str, ...]) -> tuple[sp.Spool, list[str]] | int:
    """The spool and the job ids a bulk command acts on: its IDs, or every job in ``--state``
    (or, with ``--all``, in any state it ``applies_to``), oldest first. Else, having said what
    is wrong, the exit status: a usage error, or a spool without a jobs folder (wrong --spool)."""
    spool = spool_from(args)
    states = args.state or (list(applies_to) if args.all else [])
    if args.job_ids and states:
        err(f"{args.command}: give job IDs, or --state/--all, not both")
        return EXIT_USAGE
    if not args.job_ids and not states:
        err(f"{args.command}: give job IDs, --state {'|'.join(applies_to)} or --all")
        return EXIT_USAGE
    if args.job_ids:
        return spool, list(args.job_ids)
    if not spool.jobs.is_dir():
        err(f"{spool.jobs} does not exist (wrong --spool?)")
        return EXIT_FAILED
    jobs = [j for state in dict.fromkeys(states) for j in sp.list_jobs(spool, state)]
    jobs.sort(key=lambda j: (j.submitted_at, j.id))
    return spool, [j.id for j in jobs]


def _known(spool: sp.Spool, job_id: str, counts: Counter[str]) -> bool:
    """Whether ``job_id`` names a job; if not, say so (with the ids meant) and count it."""
    if (problem := unknown_job(spool, job_id)) is None:
        return True
    err(problem)
    counts["unknown"] += 1
    return False


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel: a queued job ends cancelled now; a running one stops at its next batch."""
    from ktrdr_daemon.job_files import mirror_result

    selection = _selected(args, CANCELLABLE)
    if isinstance(selection, int):
        return selection
    spool, selected = selection
    status, counts = EXIT_OK, Counter[str]()
    for job_id in selected:
        if not _known(spool, job_id, counts):
            status = EXIT_FAILED
            continue
        info = sp.job_info(spool, job_id)
        if info.state in sp.TERMINAL:
            err(f"{job_id}: already {info.state}; nothing to cancel")
            counts[f"already {info.state}"] += 1
            if args.job_ids:  # a job picked by --state that ended meanwhile is no mistake
                status = EXIT_FAILED
            continue
        sp.request_cancel(spool, job_id)
        # Nobody runs a queued job: end it here so it shows cancelled at once. Exclusive
        # creation: a daemon claiming it at this moment sees the result and hands back.
        if sp.finish_cancelled(spool, job_id):
            result = sp.read_result(spool, job_id) or {"state": "cancelled"}
            mirror_result(spool.job_dir(job_id), spool.tmp, result)
            print(f"{job_id}: cancelled (it was queued; it will not start)")
            counts["cancelled"] += 1
        elif sp.job_state(spool, job_id) == "running":
            print(f"{job_id}: cancel requested; {info.daemon or 'its daemon'} stops it at the "
                  "next batch and publishes nothing")
            counts["cancel requested (running)"] += 1
        else:
            state = sp.job_state(spool, job_id)
            print(f"{job_id}: {state}")
            counts[state] += 1
    _summary(args, selected, counts, "queued or running")
    return status


def cmd_retry(args: argparse.Namespace) -> int:
    """Requeue failed or cancelled jobs as a new attempt (the attempt budget restarts)."""
    from ktrdr_daemon.job_files import append_log, mirror_state

    selection = _selected(args, RETRYABLE)
    if isinstance(selection, int):
        return selection
    spool, selected = selection
    status, counts = EXIT_OK, Counter[str]()
    for job_id in selected:
        if not _known(spool, job_id, counts):
            status = EXIT_FAILED
            continue
        try:
            attempt = sp.retry_job(spool, job_id)
        except ValueError as exc:
            err(str(exc))
            counts["not retried"] += 1
            if args.job_ids:
                status = EXIT_FAILED
            continue
        folder = spool.job_dir(job_id)
        # progress.json mirrors the state for readers: say queued unless a daemon took it
        # already (then its worker writes "running" itself).
        if (sp.read_json(folder / "progress.json") or {}).get("state") in sp.TERMINAL:
            mirror_state(folder, spool.tmp, "queued", attempt=attempt, error=None,
                         model_path=None, message=f"retried: queued again as attempt {attempt}")
        append_log(folder, f"[retry] queued again as attempt {attempt}")
        print(f"{job_id}: queued again as attempt {attempt}")
        counts["requeued"] += 1
    _summary(args, selected, counts, "failed or cancelled")
    return status


def _summary(args: argparse.Namespace, selected: list[str], counts: Counter[str],
             states: str) -> None:
    """One closing line when more than one job was asked for (or a --state/--all matched)."""
    if args.job_ids and len(selected) < 2:
        return
    if not selected:
        which = "/".join(args.state) if args.state else states
        print(f"no {which} jobs; nothing to {args.command}")
        return
    parts = ", ".join(f"{n} {what}" for what, n in counts.items())
    print(f"{len(selected)} job{'s' if len(selected) != 1 else ''}: {parts}")


# --- daemons ----------------------------------------------------------------------------------

DAEMONS_HELP = """\
Liveness, from a one-shot look. A daemon on this host is judged by its pid (and the
process start time): alive or dead at once. A daemon on another host cannot be judged
that way, and its updated_at is another host's clock: for those (only) the command looks
twice, heartbeat_seconds + 0.5 s apart, and calls the daemon alive when its heartbeat
counter changed in between, else stale. A clean exit removes the daemon's file, so a
dead or stale entry is a crash (or a lost network); it is harmless and shows for
reference (`rm spool/daemons/<id>.json` to forget it). --no-wait skips the second look."""


def daemon_rows(spool: sp.Spool, settings: Settings, wait: bool = True) -> list[dict[str, Any]]:
    me = sp.DaemonIdentity.current("reader")
    judge = sp.LivenessJudge(me, settings.expire_seconds)
    first = sp.read_daemons(spool, judge)
    remote = [d for d in first if not judge.same_host(d)]
    second = {d.get("id"): d for d in first}
    if remote and wait:
        time.sleep(settings.heartbeat_seconds + 0.5)
        second = {d.get("id"): d for d in sp.read_daemons(spool, judge)}
    now = time.time()
    rows = []
    for d in first:
        updated = parse_time(str(d.get("updated_at")))
        age = None if updated is None else round(now - updated, 1)
        if str(d.get("dead_reason") or "").startswith("malformed"):
            status, how = "dead", "its heartbeat file"  # edited or torn: never trusted
        elif judge.same_host(d):
            if not d["alive"]:
                status = "dead"
            elif age is not None and age > settings.expire_seconds:
                status = "stale"  # the process exists but stopped beating (hung, stopped)
            else:
                status = "alive"
            how = "pid on this host"
        else:
            later = second.get(d.get("id"))
            beat_changed = later is not None and later.get("beat") != d.get("beat")
            status = "alive" if beat_changed else "stale"
            how = "heartbeat counter" if wait else "not checked (--no-wait)"
        rows.append({
            "id": d.get("id"), "status": status, "judged_by": how, "host": d.get("host"),
            "pid": d.get("pid"), "device": d.get("device"), "device_name": d.get("device_name"),
            "slots": d.get("slots"), "free_slots": d.get("free_slots"),
            "running": d.get("running") or [], "counters": d.get("counters") or {},
            "watcher": d.get("watcher"), "version": d.get("version"),
            "updated_at": d.get("updated_at"), "heartbeat_age_seconds": age,
            "dead_reason": d.get("dead_reason"),
        })
    return rows


def cmd_daemons(args: argparse.Namespace) -> int:
    """Live and stale daemons: device, slots, current jobs, heartbeat age."""
    settings = settings_from(args)
    rows = daemon_rows(sp.Spool(settings.spool), settings, wait=not args.no_wait)
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    if not rows:
        print(f"no daemons have a heartbeat in {sp.Spool(settings.spool).daemons}")
        return EXIT_OK
    width = max(10, *(len(str(r["id"])) for r in rows))
    print(f"{'ID':<{width}}  {'STATUS':<6}  {'HOST':<12}  {'PID':>7}  {'DEVICE':<8}  "
          f"{'SLOTS':>5}  {'BEAT':>5}  JOBS")
    for r in rows:
        slots = f"{(r['slots'] or 0) - (r['free_slots'] or 0)}/{r['slots']}"
        jobs = ", ".join(r["running"]) or "-"
        if r["status"] == "dead" and r["dead_reason"]:
            jobs += f"  ({r['dead_reason']})"
        # Heartbeat files are spool text anyone can write: printed through printable().
        print(printable(f"{r['id']:<{width}}  {r['status']:<6}  {str(r['host'])[:12]:<12}  "
                        f"{r['pid'] or '-':>7}  {r['device'] or '-':<8}  {slots:>5}  "
                        f"{age(r['heartbeat_age_seconds']):>5}  {jobs}").replace("\n", " "))
    return EXIT_OK


# --- clean ------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``12h``, ``7d`` (or combined, ``1d12h``) -> seconds."""
    text = text.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use a number and a unit s, m, h or d (e.g. 7d, 12h)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove terminal job folders older than --older-than; never models, never live jobs."""
    spool = spool_from(args)
    if not spool.jobs.is_dir():
        err(f"{spool.jobs} does not exist (wrong --spool?)")
        return EXIT_FAILED
    removed = sp.clean(spool, args.older_than)
    if args.json:
        print(json.dumps({"removed": removed}))
        return EXIT_OK
    for job_id in removed:
        print(f"removed {job_id}")
    print(f"{len(removed)} finished job folder(s) removed from {spool.jobs}; models untouched")
    return EXIT_OK



# --- registration -----------------------------------------------------------------------------


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the reading and steering commands on ``sub`` (argparse subparsers); ``common``
    adds the --spool/--models/--data/--strategies flags."""
    from ktrdr_daemon import doctor, listing, waiting

    listing.add_commands(sub, common)
    p = sub.add_parser(
        "tail", help="follow a job live until it ends (exit 0 completed, 1 failed, "
        "2 cancelled, 130 Ctrl-C)",
        description="A live progress bar (epoch, losses, ETA, val_loss trend) and the log "
        "lines as they appear, read from the job's files; waits while the job is queued. "
        "Exit status 0 completed, 1 failed (or unknown job), 2 cancelled, 130 when you stop "
        "it with Ctrl-C (the shell's code for an interrupt; the job goes on).")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--json", action="store_true",
                   help="stream progress.json snapshots, one JSON object a line")
    p.add_argument("--no-log", dest="no_log", action="store_true", help="the bar only")
    common(p)
    p.set_defaults(func=cmd_tail)

    waiting.add_command(sub, common)

    for name, states, func, text in (
            ("cancel", CANCELLABLE, cmd_cancel,
             "cancel jobs (queued: at once; running: at the next batch)"),
            ("retry", RETRYABLE, cmd_retry,
             "requeue failed or cancelled jobs as a new attempt")):
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}: the "
                           f"jobs named, every job in the --state given ({', '.join(states)}), "
                           f"or all {' and '.join(states)} jobs with --all; one line per job, "
                           f"then a summary when there are several. Exit 0, 1 if a named "
                           f"job is unknown or cannot be "
                           f"{'cancelled' if name == 'cancel' else 'retried'}, 64 for a "
                           "usage error.")
        p.add_argument("job_ids", nargs="*", metavar="ID")
        p.add_argument("--state", action="append", choices=states,
                       help=f"every job in this state (repeatable): {', '.join(states)}")
        p.add_argument("--all", action="store_true",
                       help=f"every {' or '.join(states)} job")
        common(p)
        p.set_defaults(func=func)

    p = sub.add_parser("daemons", help="live and stale daemons: device, slots, jobs, heartbeat",
                       description=DAEMONS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-wait", dest="no_wait", action="store_true",
                   help="one look only: daemons on other hosts show as stale")
    common(p)
    p.set_defaults(func=cmd_daemons)

    p = sub.add_parser("clean", help="remove finished job folders (never models)")
    p.add_argument("--older-than", dest="older_than", type=parse_duration, required=True,
                   metavar="AGE", help="e.g. 7d, 12h, 30m, 90s (since the job ended)")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_clean)

    doctor.add_commands(sub, common)
