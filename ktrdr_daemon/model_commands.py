"""``models`` and ``report``: what the model store holds (``models``, in model_listing.py), and a
model's (or job's) training report drawn as a PNG."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ktrdr_daemon import model_listing
from ktrdr_daemon.cli_support import EXIT_OK, settings_from
from pipeline.errors import PipelineError


def cmd_report(args: argparse.Namespace) -> int:
    """Draw the training report of a saved model version, or of a job in any state: a completed
    job's model, else the curves so far from the job's ``events.jsonl``."""
    from ktrdr_daemon.spool import Spool, job_state, read_result
    from pipeline.report import report_data_from_events, report_data_from_version, write_report

    target = Path(args.target)
    if (target / "metrics.json").is_file():
        folder = target.resolve()
        data = report_data_from_version(folder)
        default = Path(f"report_{folder.parent.name}_{folder.name}.png")
    else:
        spool = Spool(settings_from(args).spool)
        try:
            job_dir = spool.job_dir(args.target)
        except ValueError:
            job_dir = None
        if job_dir is None or not job_dir.is_dir():
            raise PipelineError(f"{args.target}: not a model version folder (no metrics.json) "
                                f"and not a job in {spool.jobs}")
        result = read_result(spool, args.target) or {}
        model = Path(result.get("model_path") or job_dir / "no-model")
        if result.get("state") == "completed" and (model / "metrics.json").is_file():
            data = report_data_from_version(model)
        else:
            state = job_state(spool, args.target)
            data = report_data_from_events(job_dir / "events.jsonl", title=f"job {args.target}",
                                           state=state)
            if not data.history and state in ("failed", "cancelled"):
                raise PipelineError(_nothing_to_draw(args.target, state, result))
        default = Path(f"report_{args.target}.png")
    out = write_report(data, Path(args.out) if args.out else default)
    print(f"report written to {out} ({', '.join(data.panels())})")
    return EXIT_OK


def _nothing_to_draw(job_id: str, state: str, result: dict[str, Any]) -> str:
    """Why a job that ended before its first epoch has no report (no file is written)."""
    error = result.get("error") or {}
    message = str(error.get("message") or error or "").strip()
    first = message.splitlines()[0] if message else "no error recorded"
    why = f": {first}" if state == "failed" else ""
    return f"job {job_id} {state} before training{why}; nothing to draw"


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``models`` and ``report`` on ``sub`` (argparse subparsers)."""
    model_listing.add_command(sub, common)

    p = sub.add_parser("report", help="draw a model's training report (or a job's curves so far)")
    p.add_argument("target", metavar="MODEL_PATH|JOB_ID",
                   help="a model version folder (or its _latest link) or a job id in the spool")
    p.add_argument("--out", help="PNG file to write (default: ./report_<version or job>.png)")
    common(p)
    p.set_defaults(func=cmd_report)
