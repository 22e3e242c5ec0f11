"""What the reading and steering commands share: exit codes, the settings and spool from
parsed arguments, and the "no such job" message with the ids a user probably meant."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from datetime import datetime

from ktrdr_daemon import spool as sp
from ktrdr_daemon.settings import Settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2
EXIT_USAGE = 64  # sysexits' EX_USAGE: the command line (or a setting) is wrong
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C (128 + SIGINT)
STATES = ("queued", "running", "completed", "failed", "cancelled")
_SETTING_FLAGS = ("spool", "models", "data", "strategies", "device", "observer")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of a reading command: its flags, then the environment and config file."""
    return load_settings({n: getattr(args, n, None) for n in _SETTING_FLAGS})


def spool_from(args: argparse.Namespace) -> sp.Spool:
    return sp.Spool(settings_from(args).spool)


def err(message: str) -> None:
    """``error: ...`` on stderr; the message may quote spool names, so never as escapes."""
    from ktrdr_daemon.safe_text import printable

    print(f"error: {printable(message)}", file=sys.stderr)


def unknown_job(spool: sp.Spool, job_id: str, submitted_ok: bool = False) -> str | None:
    """None when ``job_id`` names a job folder, else the message to print (with close ids).
    ``submitted_ok``: a drop still in incoming/ counts as a job too (``tail`` and ``wait``
    wait for it to be accepted)."""
    try:
        if spool.job_dir(job_id).is_dir():
            return None
    except ValueError as exc:
        return str(exc)
    if any(os.path.lexists(spool.incoming / f"{job_id}{s}") for s in sp.DROP_SUFFIXES):
        if submitted_ok:
            return None
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


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
