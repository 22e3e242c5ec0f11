"""The reading and steering commands of ``ktrdr-daemon`` (spool spec section 7):
``ls``, ``show``, ``tail``, ``cancel``, ``retry``, ``daemons``, ``clean`` and ``doctor``.

They work from the spool's files alone, like ``cat`` would: no daemon needs to be running,
and nothing here asks one anything. Each command is a plain function of its parsed
arguments returning the exit status; :func:`add_commands` registers them.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon.settings import Settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2
STATES = ("queued", "running", "completed", "failed", "cancelled")
LOG_TAIL_LINES = 20


def _settings(args: argparse.Namespace) -> Settings:
    names = ("spool", "models", "data", "strategies", "device", "observer")
    return load_settings({n: getattr(args, n, None) for n in names})


def _spool(args: argparse.Namespace) -> sp.Spool:
    return sp.Spool(_settings(args).spool)


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _unknown_job(spool: sp.Spool, job_id: str) -> str | None:
    """None when ``job_id`` names a job folder, else the message to print (with close ids)."""
    try:
        if spool.job_dir(job_id).is_dir():
            return None
    except ValueError as exc:
        return str(exc)
    if any(os.path.lexists(spool.incoming / f"{job_id}{s}") for s in sp.DROP_SUFFIXES):
        return (f"job {job_id!r} is still in {spool.incoming} (not accepted yet: is a daemon "
                "running? `ktrdr-daemon daemons`)")
    try:
        ids = [e.name for e in os.scandir(spool.jobs) if e.is_dir()]
    except FileNotFoundError:
        return f"no job {job_id!r}: {spool.jobs} does not exist (wrong --spool?)"
    similar = [i for i in ids if i.startswith(job_id)][:5]
    similar += [i for i in difflib.get_close_matches(job_id, ids, n=5, cutoff=0.5)
                if i not in similar]
    hint = f"; similar: {', '.join(similar[:5])}" if similar else (
        f"; {len(ids)} jobs there (`ktrdr-daemon ls`)" if ids else "; the spool has no jobs")
    return f"no job {job_id!r} in {spool.jobs}{hint}"


def _parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


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
    rows = job_rows(_spool(args), args.state)
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
                     f"{_age(r['age_seconds']):>5}  {note}")
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
    spool = _spool(args)
    if (problem := _unknown_job(spool, args.job_id)) is not None:
        _err(problem)
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


# --- tail -------------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow a job until it ends; exit 0 completed, 1 failed, 2 cancelled."""
    from ktrdr_daemon import tailing

    spool = _spool(args)
    problem = _unknown_job(spool, args.job_id)
    if problem is not None and "still in" not in problem:  # a submitted job is waited for
        _err(problem)
        return EXIT_FAILED
    try:
        if args.json:
            state = tailing.follow_json(spool, args.job_id, sys.stdout)
        else:
            from rich.console import Console

            state = tailing.follow(spool, args.job_id, Console(highlight=False),
                                   show_log=not args.no_log)
    except KeyboardInterrupt:
        print("stopped following; the job goes on", file=sys.stderr)
        return 130
    except LookupError as exc:
        _err(str(exc))
        return EXIT_FAILED
    return tailing.EXIT_CODES.get(state, EXIT_FAILED)


# --- cancel, retry ----------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel: a queued job ends cancelled now; a running one stops at its next batch."""
    from ktrdr_daemon.job_files import mirror_result

    spool = _spool(args)
    status = EXIT_OK
    for job_id in args.job_ids:
        if (problem := _unknown_job(spool, job_id)) is not None:
            _err(problem)
            status = EXIT_FAILED
            continue
        info = sp.job_info(spool, job_id)
        if info.state in sp.TERMINAL:
            _err(f"{job_id}: already {info.state}; nothing to cancel")
            status = EXIT_FAILED
            continue
        sp.request_cancel(spool, job_id)
        # Nobody runs a queued job: end it here so it shows cancelled at once. Exclusive
        # creation: a daemon claiming it at this moment sees the result and hands back.
        if sp.finish_cancelled(spool, job_id):
            result = sp.read_result(spool, job_id) or {"state": "cancelled"}
            mirror_result(spool.job_dir(job_id), spool.tmp, result)
            print(f"{job_id}: cancelled (it was queued; it will not start)")
        elif sp.job_state(spool, job_id) == "running":
            print(f"{job_id}: cancel requested; {info.daemon or 'its daemon'} stops it at the "
                  "next batch and publishes nothing")
        else:
            print(f"{job_id}: {sp.job_state(spool, job_id)}")
    return status


def cmd_retry(args: argparse.Namespace) -> int:
    """Requeue failed or cancelled jobs as a new attempt (the attempt budget restarts)."""
    from ktrdr_daemon.job_files import append_log, mirror_state

    spool = _spool(args)
    status = EXIT_OK
    for job_id in args.job_ids:
        if (problem := _unknown_job(spool, job_id)) is not None:
            _err(problem)
            status = EXIT_FAILED
            continue
        try:
            attempt = sp.retry_job(spool, job_id)
        except ValueError as exc:
            _err(str(exc))
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
    return status


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
        updated = _parse_time(str(d.get("updated_at")))
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
    settings = _settings(args)
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
        print(f"{r['id']:<{width}}  {r['status']:<6}  {str(r['host'])[:12]:<12}  "
              f"{r['pid'] or '-':>7}  {r['device'] or '-':<8}  {slots:>5}  "
              f"{_age(r['heartbeat_age_seconds']):>5}  {jobs}")
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
    spool = _spool(args)
    if not spool.jobs.is_dir():
        _err(f"{spool.jobs} does not exist (wrong --spool?)")
        return EXIT_FAILED
    removed = sp.clean(spool, args.older_than)
    if args.json:
        print(json.dumps({"removed": removed}))
        return EXIT_OK
    for job_id in removed:
        print(f"removed {job_id}")
    print(f"{len(removed)} finished job folder(s) removed from {spool.jobs}; models untouched")
    return EXIT_OK


# --- doctor -----------------------------------------------------------------------------------


@dataclass
class Check:
    """One line of ``doctor``: ``status`` is ok, warn or fail; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""


def _writable(folder: Path) -> str | None:
    """None when a file can be created and removed in ``folder`` (root and NFS make
    ``os.access`` lie), else why not."""
    probe = folder / f".doctor.{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _folder_check(name: str, folder: Path, fix: bool, create: Callable[[], None]) -> Check:
    created = False
    if not folder.is_dir() and not fix:
        return Check(name, "warn", f"{folder} does not exist",
                     "`ktrdr-daemon doctor --fix` (or `ktrdr-daemon run`) creates it")
    if fix:
        existed = folder.is_dir()
        try:
            create()  # idempotent: also fills in missing subfolders
        except OSError as exc:
            return Check(name, "fail", f"cannot create {folder}: {exc.strerror}",
                         f"create it with write access for this user (mkdir -p {folder})")
        created = not existed
    if (why := _writable(folder)) is not None:
        return Check(name, "fail", f"{folder} is not writable: {why}",
                     f"give this user write access (chown/chmod {folder})")
    return Check(name, "ok", f"{folder.resolve()} writable" + (" (created)" if created else ""))


def check_spool(s: Settings, fix: bool) -> Check:
    spool = sp.Spool(s.spool)
    check = _folder_check("spool", s.spool, fix, spool.ensure_layout)
    missing = [p.name for p in (spool.incoming, spool.tmp, spool.jobs, spool.daemons)
               if not p.is_dir()]
    if check.status == "ok" and missing:
        return Check("spool", "warn", f"{s.spool}: missing {', '.join(missing)}/",
                     "`ktrdr-daemon doctor --fix` or `ktrdr-daemon run` creates them")
    return check


def check_models(s: Settings, fix: bool) -> Check:
    return _folder_check("models", s.models, fix,
                         lambda: s.models.mkdir(parents=True, exist_ok=True))


def check_data(s: Settings, fix: bool) -> Check:
    root = s.data_root
    if not root.is_dir():
        return Check("data", "fail", f"price data root {root} does not exist",
                     "set --data / KTRDR_DATA / data: in config/daemon.yaml")
    return Check("data", "ok", f"{root}")


def check_strategies(s: Settings, fix: bool) -> Check:
    if not s.strategies.is_dir():
        return Check("strategies", "warn", f"{s.strategies} does not exist; jobs must inline "
                     "their strategy", "set --strategies / KTRDR_STRATEGIES")
    count = len(list(s.strategies.glob("*.y*ml")))
    return Check("strategies", "ok", f"{s.strategies.resolve()} ({count} files)")


def check_watcher(s: Settings, fix: bool) -> Check:
    from ktrdr_daemon.watcher import NETWORK_FILESYSTEMS, choose_observer, filesystem_type

    where = s.spool if s.spool.exists() else s.spool.resolve().parent
    fs = filesystem_type(where) or "unknown"
    kind = choose_observer(where, s.observer)
    detail = f"{kind} (filesystem {fs}, observer setting {s.observer})"
    if kind == "inotify" and fs in NETWORK_FILESYSTEMS:
        return Check("watcher", "warn", detail + ": inotify misses other hosts' changes",
                     "use observer: auto or polling (the 2 s rescan still finds every job)")
    return Check("watcher", "ok", detail)


def check_device(s: Settings, fix: bool) -> Check:
    from pipeline.device import describe_device, select_device
    from pipeline.errors import PipelineError

    try:
        device = describe_device(select_device(s.device))
    except PipelineError as exc:
        return Check("device", "fail", str(exc), "use --device auto or cpu (KTRDR_DEVICE)")
    memory = device.get("memory_bytes")
    size = f", {memory / 2**30:.1f} GiB" if memory else ""
    status = "ok"
    fix_hint = ""
    if device["device"] == "cpu" and s.device == "auto":
        fix_hint = "no usable GPU: jobs train on the CPU (fine for small MLPs)"
    return Check("device", status, f"{device['device']}: {device.get('name')}{size} "
                 f"(setting {s.device})", fix_hint)


def check_torch(s: Settings, fix: bool) -> Check:
    import torch

    cuda = torch.version.cuda or "none"
    return Check("torch", "ok", f"torch {torch.__version__} (CUDA build {cuda}, "
                 f"{torch.get_num_threads()} CPU threads available)")


def check_daemons(s: Settings, fix: bool) -> Check:
    rows = daemon_rows(sp.Spool(s.spool), s)  # waits a heartbeat only for other hosts' daemons
    alive = [r for r in rows if r["status"] == "alive"]
    others = len(rows) - len(alive)
    extra = f"; {others} stale or dead heartbeat file(s)" if others else ""
    if not alive:
        return Check("daemons", "warn", "no live daemon serves this spool; queued jobs wait"
                     + extra, "start one: `ktrdr-daemon run` or `ktrdr-daemon service install`")
    names = ", ".join(f"{r['id']} on {r['host']} ({r['device']}, "
                      f"{len(r['running'])}/{r['slots']} busy)" for r in alive)
    return Check("daemons", "ok", f"{len(alive)} alive: {names}{extra}")


def _installed_services() -> list[tuple[str, Path, list[str], dict[str, str]]]:
    """(kind, file, argv, environment) of each launchd agent and systemd unit that runs us."""
    import plistlib

    from ktrdr_daemon import service as svc

    found = []
    for path in sorted(svc.install_dir("launchd").glob("*.plist")):
        with contextlib.suppress(OSError, ValueError, KeyError):  # not ours, or not a plist
            if b"ktrdr_daemon" in path.read_bytes():
                agent = plistlib.loads(path.read_bytes())
                found.append(("launchd", path, list(agent["ProgramArguments"]),
                              dict(agent.get("EnvironmentVariables") or {})))
    folders = dict.fromkeys([svc.install_dir("systemd"), svc.install_dir("systemd", system=True)])
    for path in sorted(p for folder in folders for p in folder.glob("*.service")):
        with contextlib.suppress(OSError, ValueError):
            if "ktrdr_daemon" in (unit := path.read_text()):
                env = dict(word.replace("%%", "%").split("=", 1) for line in unit.splitlines()
                           if line.startswith("Environment=")
                           for word in shlex.split(line.removeprefix("Environment=")))
                found.append(("systemd", path, svc.exec_start_argv(unit), env))
    return found


def check_service(s: Settings, fix: bool) -> Check:
    """Is a service installed, and is the daemon it runs beating (judged like `daemons`)?"""
    from ktrdr_daemon import service as svc
    from ktrdr_daemon.daemon import default_daemon_id

    lines, starts = [], []
    for kind, path, argv, env in (services := _installed_services()):
        label = {"launchd": "launchd agent", "systemd": "systemd unit"}[kind]
        system = path.parent == svc.install_dir(kind, system=True, env={})
        start = svc.load_command(kind, path.stem, path, system=system)
        # The daemon's own settings: its flags, then the file's environment, then its config.
        flags = {argv[i].removeprefix("--").replace("-", "_"): argv[i + 1]
                 for i in range(len(argv) - 1) if argv[i].startswith("--")}
        flags = {k: v for k, v in flags.items() if k in ("spool", "device", "daemon_id")}
        try:  # no KTRDR_CONFIG in the file: the daemon found no config at install time
            its = load_settings(flags, env=env, config_file=Path(env.get("KTRDR_CONFIG",
                                                                          os.devnull)))
        except SystemExit as exc:
            lines.append(f"{label} {path} installed; its settings do not load: {exc}")
            starts.append(start)
            continue
        daemon_id = its.daemon_id or default_daemon_id(its.device)
        rows = {r["id"]: r for r in daemon_rows(sp.Spool(its.spool), its)}
        status = rows.get(daemon_id, {}).get("status", "no heartbeat file")
        if status != "alive":
            starts.append(start)
        beat = "heartbeat live" if status == "alive" else f"heartbeat not live ({status})"
        lines.append(f"{label} {path} installed; daemon {daemon_id} on {its.spool}: {beat}")
    if not services:
        return Check("service", "ok", "no launchd agent or systemd unit installed",
                     "to run the daemon at login or boot: `ktrdr-daemon service install "
                     "--systemd` (or --launchd)")
    if starts:
        return Check("service", "warn", "; ".join(lines), "start it: " + "; ".join(
            f"`{c}`" for c in starts) + " (then see its journal or log file)")
    return Check("service", "ok", "; ".join(lines))


def check_disk(s: Settings, fix: bool) -> Check:
    lines, status = [], "ok"
    for name, folder in (("spool", s.spool), ("models", s.models)):
        where = folder if folder.exists() else folder.resolve().parent
        while not where.exists():
            where = where.parent
        free = shutil.disk_usage(where).free
        lines.append(f"{name} {free / 2**30:.1f} GiB free")
        if free < 100 * 2**20:
            status = "fail"
        elif free < 2**30 and status == "ok":
            status = "warn"
    fix_hint = "" if status == "ok" else "free some space: `ktrdr-daemon clean --older-than 7d`"
    return Check("disk", status, ", ".join(lines), fix_hint)


#: Each check is ``(settings, fix) -> Check``; adding a check is adding it here.
CHECKS: list[Callable[[Settings, bool], Check]] = [
    check_spool, check_models, check_data, check_strategies, check_watcher, check_device,
    check_torch, check_daemons, check_service, check_disk,
]


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check; exit 1 if any fails."""
    settings = _settings(args)
    results = []
    for check in CHECKS:
        try:
            results.append(check(settings, args.fix))
        except Exception as exc:  # a broken check is a failed check, not a crash
            name = check.__name__.removeprefix("check_")
            results.append(Check(name, "fail", f"the check itself failed: {exc!r}"))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    else:
        for r in results:
            print(f"{r.status:<4}  {r.name:<10}  {r.detail}")
            if r.fix:
                print(f"{'':<4}  {'':<10}  -> {r.fix}")
    return EXIT_FAILED if any(r.status == "fail" for r in results) else EXIT_OK


# --- registration -----------------------------------------------------------------------------


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the commands on ``sub`` (argparse subparsers); ``common`` adds the
    --spool/--models/--data/--strategies flags."""
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

    p = sub.add_parser(
        "tail", help="follow a job live until it ends (exit 0 completed, 1 failed, 2 cancelled)",
        description="A live progress bar (epoch, losses, ETA, val_loss trend) and the log "
        "lines as they appear, read from the job's files; waits while the job is queued. "
        "Exit status 0 completed, 1 failed (or unknown job), 2 cancelled.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--json", action="store_true",
                   help="stream progress.json snapshots, one JSON object a line")
    p.add_argument("--no-log", dest="no_log", action="store_true", help="the bar only")
    common(p)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("cancel", help="cancel jobs (queued: at once; running: next batch)")
    p.add_argument("job_ids", nargs="+", metavar="ID")
    common(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", help="requeue failed or cancelled jobs as a new attempt")
    p.add_argument("job_ids", nargs="+", metavar="ID")
    common(p)
    p.set_defaults(func=cmd_retry)

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

    p = sub.add_parser("doctor", help="check folders, watcher, device, daemons, disk",
                       description="Each check prints ok, warn or fail with a fix; exit 1 if "
                       "any fails. Missing spool or model folders are a warning; --fix "
                       "creates them.")
    p.add_argument("--json", action="store_true")
    p.add_argument("--fix", action="store_true", help="create missing spool and model folders")
    p.add_argument("--device", help="the device setting to check (KTRDR_DEVICE)")
    p.add_argument("--observer", choices=("auto", "inotify", "polling"))
    common(p)
    p.set_defaults(func=cmd_doctor)
