"""``models`` and ``report``: what the model store holds, and a model's (or job's) training
report drawn as a PNG."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ktrdr_daemon.cli_support import EXIT_OK, settings_from
from pipeline.errors import PipelineError


def cmd_models(args: argparse.Namespace) -> int:
    """Trained versions with their headline metrics; every known strategy trained or not."""
    from pipeline.store import ModelStore
    from pipeline.strategy import load_strategy

    settings = settings_from(args)
    store = ModelStore(settings.models)
    versions = store.versions(args.strategy)
    known: set[str] = {v.strategy for v in versions}
    if settings.strategies.is_dir() and not args.strategy:
        for path in sorted(settings.strategies.glob("*.y*ml")):
            try:
                known.add(load_strategy(path).name)
            except PipelineError:
                continue
    if args.strategy:
        known.add(args.strategy)
    rows = []
    for name in sorted(known):
        mine = [v for v in versions if v.strategy == name]
        rows.append({"strategy": name, "trained": bool(mine), "versions": [
            {"version": f"{v.timeframe}_v{v.version}", "path": str(v.path),
             "created_at": v.created_at,
             **v.headline,  # ours or KTRDR's metrics, wherever the writer put them
             "report": str(v.path / "report.png") if (v.path / "report.png").is_file()
             else None} for v in mine]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        print(f"{row['strategy']}: {'trained' if row['trained'] else 'untrained'}")
        for v in row["versions"]:
            if v.get("mae") is not None:  # a regression model
                dirn, mae = _fmt(v.get("directional_accuracy")), f"{v['mae']:.4g}"
                print(f"  {v['version']:<10} dir {dirn}  mae {mae}  {v['created_at']}  "
                      f"{v['path']}")
            else:
                acc, f1, val = (_fmt(v[k]) for k in ("test_accuracy", "f1",
                                                     "best_val_accuracy"))
                print(f"  {v['version']:<10} acc {acc}  f1 {f1}  val {val}  "
                      f"{v['created_at']}  {v['path']}")
            print(f"  {'':<10} report {v['report'] or '(none: ktrdr-daemon report PATH)'}")
    return EXIT_OK


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


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
    p = sub.add_parser("models", help="trained versions and their metrics")
    p.add_argument("strategy", nargs="?")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("report", help="draw a model's training report (or a job's curves so far)")
    p.add_argument("target", metavar="MODEL_PATH|JOB_ID",
                   help="a model version folder (or its _latest link) or a job id in the spool")
    p.add_argument("--out", help="PNG file to write (default: ./report_<version or job>.png)")
    common(p)
    p.set_defaults(func=cmd_report)
