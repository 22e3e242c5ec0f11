"""``ktrdr-daemon wait ID...``: block until every named job has ended, saying each end as it
happens (pueue's and Slurm's ``wait``).

It reads the spool like ``ls`` does and asks no daemon anything: a job has ended when its
``result.json`` exists (spool spec section 1), so each round is one ``stat`` per job still
waited for, every :data:`POLL_S`. A job submitted but not accepted yet (still in ``incoming/``)
is waited for too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon.cli_support import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    err,
    spool_from,
    unknown_job,
)

POLL_S = 0.3
VANISH_S = 10.0  # a drop moves into jobs/ by one rename: a gap this long is no acceptance
WAIT_HELP = """\
Block until every job named has ended (completed, failed or cancelled), printing each
end as it happens, then a summary. Jobs that have ended already are reported at once;
a job still in incoming/ (submitted, not accepted yet) is waited for.

Exit status: 0 all completed; 1 any failed (or an unknown id: reported at once, nothing
waited for); 2 any cancelled and none failed; 130 when you stop it with Ctrl-C (the
shell's code for an interrupt): the jobs go on."""


def end_line(job_id: str, result: dict[str, Any]) -> str:
    """What one ended job prints: its state, and the model or the error."""
    state = str(result.get("state", "failed"))
    if state == "completed":
        model = result.get("model_path")
        return f"{job_id}: completed" + (f"  model {model}" if model else "")
    if state == "failed":
        message = str((result.get("error") or {}).get("message") or "no error recorded")
        return f"{job_id}: failed: {message.splitlines()[0]}"
    return f"{job_id}: {state}"


def wait_for(spool: sp.Spool, job_ids: list[str], say: Callable[[str], None],
             poll_s: float = POLL_S) -> dict[str, str]:
    """Wait until each job has a result; ``say`` each end; return {job id: final state}."""
    ended: dict[str, str] = {}
    pending = list(dict.fromkeys(job_ids))
    missing_since: dict[str, float] = {}
    while pending:
        for job_id in list(pending):
            if not os.path.lexists(spool.job_dir(job_id) / sp.RESULT):
                if _vanished(spool, job_id, missing_since):
                    ended[job_id] = "failed"
                    say(f"{job_id}: failed: neither in {spool.incoming} nor in {spool.jobs} "
                        "any more (accepted under another id? see ls)")
                    pending.remove(job_id)
                continue
            result = sp.read_result(spool, job_id) or {"state": "failed"}
            ended[job_id] = str(result.get("state", "failed"))
            say(end_line(job_id, result))
            pending.remove(job_id)
        if pending:
            time.sleep(poll_s)
    return ended


def _vanished(spool: sp.Spool, job_id: str, missing_since: dict[str, float]) -> bool:
    """True once a job has had neither a folder nor a drop for :data:`VANISH_S` (a drop
    renamed by hand, or removed): waiting for it would never end."""
    if spool.job_dir(job_id).is_dir() or any(
            os.path.lexists(spool.incoming / f"{job_id}{s}") for s in sp.DROP_SUFFIXES):
        missing_since.pop(job_id, None)
        return False
    since = missing_since.setdefault(job_id, time.monotonic())
    return time.monotonic() - since > VANISH_S


def exit_status(states: dict[str, str]) -> int:
    values = set(states.values())
    if values - {"completed", "cancelled"}:
        return EXIT_FAILED
    return EXIT_CANCELLED if "cancelled" in values else EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    spool = spool_from(args)
    wanted = list(dict.fromkeys(args.job_ids))
    problems = [p for job_id in wanted
                if (p := unknown_job(spool, job_id, submitted_ok=True)) is not None]
    if problems:
        for problem in problems:
            err(problem)
        return EXIT_FAILED

    def say(line: str) -> None:
        print(line, flush=True)

    ended: dict[str, str] = {}
    left = [j for j in wanted if not os.path.lexists(spool.job_dir(j) / sp.RESULT)]
    try:
        if left:  # on stderr: stdout stays the ends alone, for scripts
            print(f"waiting for {len(left)} job{'s' if len(left) != 1 else ''} to end "
                  "(Ctrl-C stops waiting; the jobs go on)", file=sys.stderr, flush=True)
        ended = wait_for(spool, wanted, say)
    except KeyboardInterrupt:
        left = [j for j in wanted if not os.path.lexists(spool.job_dir(j) / sp.RESULT)]
        print(f"stopped waiting; the jobs go on ({len(left)} not ended: "
              f"{', '.join(left[:10])}{' ...' if len(left) > 10 else ''})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if len(wanted) > 1:
        counts: dict[str, int] = {}
        for state in ended.values():
            counts[state] = counts.get(state, 0) + 1
        print(f"{len(ended)} jobs ended: "
              + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return exit_status(ended)


def add_command(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("wait", help="block until jobs end (exit 0 all completed, 1 any "
                       "failed, 2 any cancelled, 130 Ctrl-C)", description=WAIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_ids", nargs="+", metavar="ID")
    common(p)
    p.set_defaults(func=cmd_wait)
