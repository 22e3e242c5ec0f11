"""``ktrdr-daemon``: the command line (spool spec section 7)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ktrdr_daemon import commands, service
from ktrdr_daemon.settings import Settings, load_settings
from pipeline.errors import PipelineError

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_USAGE = 0, 1, 2, 64


def _settings(args: argparse.Namespace) -> Settings:
    names = ("spool", "models", "data", "strategies", "device", "slots", "threads", "daemon_id",
             "strict", "observer")
    return load_settings({n: getattr(args, n, None) for n in names})


def cmd_train(args: argparse.Namespace) -> int:
    """Run one job or strategy file now, in the foreground, through the daemon's own code path."""
    from ktrdr_daemon.console import TerminalReporter
    from pipeline.job import load_job
    from pipeline.run import run_training
    from pipeline.stop import StopToken

    settings = _settings(args)
    job = load_job(Path(args.file), strategies_root=settings.strategies, strict=settings.strict)
    reporter = TerminalReporter()
    stop = StopToken()
    try:
        result = run_training(job, data_root=settings.data_root, models_root=settings.models,
                              device=settings.device, threads=settings.threads,
                              on_event=reporter, stop=stop)
    except KeyboardInterrupt:
        reporter.close_bar()
        print("interrupted: nothing was saved", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        reporter.close_bar()
    from pipeline.heads import test_summary

    test = result.metrics["test"]
    headline = {k: test[k] for k in HEADLINE if k in test}
    print(json.dumps({"model_path": str(result.model_path), "device": result.device,
                      **headline, "warnings": result.warnings}, indent=2) if args.json else
          f"model saved: {result.model_path}\n"
          f"test {test_summary(test)}, "
          f"on {result.device} in {sum(result.timings.values()):.1f}s")
    return EXIT_OK


# Test metrics printed after training: a classifier's, or a regression's (pipeline.heads).
HEADLINE = ("test_accuracy", "f1", "output_format", "test_loss", "mae", "rmse",
            "directional_accuracy", "spearman_ic", "threshold", "signal_counts")


def cmd_features(args: argparse.Namespace) -> int:
    """Write what the strategy feeds the network, one row per base bar (spec section 8)."""
    import numpy as np

    from pipeline import features as feat
    from pipeline.job import load_job
    from pipeline.labels import make_labels
    from pipeline.market_data import load_prices

    settings = _settings(args)
    strategy = load_job(Path(args.strategy), strategies_root=settings.strategies).strategy
    if args.timeframe:
        strategy.base_timeframe = args.timeframe
        if args.timeframe not in strategy.timeframes:
            strategy.timeframes = [args.timeframe, *strategy.timeframes]
    symbol = args.symbol or strategy.symbols[0]
    bars = {tf: load_prices(settings.data_root, symbol, tf) for tf in strategy.timeframes}
    context = feat.load_context_series(strategy, settings.data_root)
    frames = feat.compute_indicator_frames(
        strategy, bars, feat.compute_context_indicators(strategy, context))
    feat.add_fuzzy(strategy, frames)
    result = make_labels(bars[strategy.base_timeframe], strategy.training["labels"])
    # A bar without a label (a triple barrier's last bars) gets an empty cell.
    labels = result.values if result.valid.all() else np.where(result.valid, result.values, np.nan)
    table = feat.export_table(strategy, frames, labels)
    table.to_csv(args.out, index=False, float_format="%.15g")
    print(f"wrote {len(table)} rows x {len(table.columns)} columns to {args.out}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """Trained versions with their headline metrics; every known strategy trained or not."""
    from pipeline.store import ModelStore
    from pipeline.strategy import load_strategy

    settings = _settings(args)
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
        spool = Spool(_settings(args).spool)
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
            data = report_data_from_events(job_dir / "events.jsonl", title=f"job {args.target}",
                                           state=job_state(spool, args.target))
        default = Path(f"report_{args.target}.png")
    out = write_report(data, Path(args.out) if args.out else default)
    print(f"report written to {out} ({', '.join(data.panels())})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon in the foreground (what launchd and systemd run).

    On a terminal (or with ``--show``) every job it starts is drawn live, as ``tail`` does.
    """
    import logging
    import threading

    from ktrdr_daemon import spool as sp
    from ktrdr_daemon.daemon import Daemon

    settings = _settings(args)
    show = sys.stdout.isatty() if args.show is None else args.show
    followers: list[threading.Thread] = []
    on_job_start = None
    if show:
        from rich.console import Console
        from rich.logging import RichHandler

        from ktrdr_daemon.tailing import follow

        console = Console(highlight=False)
        logging.basicConfig(level=logging.INFO, format="%(message)s",
                            handlers=[RichHandler(console=console, show_path=False)])
        spool = sp.Spool(settings.spool)

        def on_job_start(job_id: str) -> None:
            thread = threading.Thread(target=follow, args=(spool, job_id, console),
                                      daemon=True, name=f"follow:{job_id}")
            thread.start()
            followers.append(thread)
    else:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s",
                            datefmt="%Y-%m-%dT%H:%M:%S")
    status = Daemon(settings, once=args.once, on_job_start=on_job_start,
                    slurm=_slurm_options(args, settings)).serve()
    for thread in followers:  # let the live views print their final lines
        thread.join(timeout=2)
    return status


def _slurm_options(args: argparse.Namespace, settings: Settings) -> object | None:
    if args.executor != "slurm":
        return None
    from ktrdr_daemon.slurm import SlurmOptions, parse_time

    try:
        parse_time(args.time)
    except ValueError as exc:
        raise SystemExit(f"--time: {exc}") from None
    if args.max_jobs:
        settings.slots = args.max_jobs
    return SlurmOptions(partition=args.partition, gpus_per_job=args.gpus_per_job,
                        time=args.time, max_jobs=settings.slots, max_requeues=args.max_requeues)


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate each file, then publish it atomically into incoming/; print the job ids."""
    from ktrdr_daemon import spool as sp
    from ktrdr_daemon.validate import validate_job

    settings = _settings(args)
    spool = sp.Spool(settings.spool)
    spool.ensure_layout()
    status = EXIT_OK
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
            body, _priority, execution = sp.parse_drop(data, path.name)
            validate_job(body, path.name, settings)
        except (OSError, ValueError, PipelineError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        wants = sp.wants_gpu(execution)
        if wants and not _gpu_alive(spool):
            print(f"error: {path.name}: execution.{wants} and no GPU daemon is alive",
                  file=sys.stderr)
            status = EXIT_FAILED
            continue
        print(sp.submit_drop(spool, data, path.name))
    return status


def _gpu_alive(spool: object) -> bool:
    from ktrdr_daemon import spool as sp

    me = sp.DaemonIdentity.current("submit")
    daemons = sp.read_daemons(spool, sp.LivenessJudge(me))
    return any(d["alive"] and d.get("device", "cpu") != "cpu" for d in daemons)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spool", help="spool folder (KTRDR_SPOOL; default ./spool)")
    p.add_argument("--models", help="model store root (KTRDR_MODELS; default ./models)")
    p.add_argument("--data", help="price data root (KTRDR_DATA; default: bundled sample data)")
    p.add_argument("--strategies", help="strategies root (KTRDR_STRATEGIES; "
                   "default ./config/strategies)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktrdr-daemon",
        description="Train KTRDR neuro-fuzzy strategies from a spool folder.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the daemon, in the foreground")
    p.add_argument("--device", help="auto | cpu | cuda | mps (KTRDR_DEVICE)")
    p.add_argument("--slots", type=int, help="jobs run at once (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads per job (default 1)")
    p.add_argument("--daemon-id", dest="daemon_id", help="default <host>-<device>")
    p.add_argument("--observer", choices=("auto", "inotify", "polling"),
                   help="filesystem events: polling for NFS/SMB (default auto)")
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                   help="draw running jobs live (default: when stdout is a terminal)")
    slurm = p.add_argument_group("Slurm (--executor slurm: each job runs as a Slurm job)")
    slurm.add_argument("--executor", choices=("local", "slurm"), default="local")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--gpus-per-job", dest="gpus_per_job", type=int, default=0)
    slurm.add_argument("--time", default="2:00:00", help="time limit of each Slurm job")
    slurm.add_argument("--max-jobs", dest="max_jobs", type=int,
                       help="Slurm jobs held at once (default: --slots)")
    slurm.add_argument("--max-requeues", dest="max_requeues", type=int, default=3,
                       help="restarts of one Slurm job (preemption, time limit) before failing")
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="validate job files and drop them into the spool")
    p.add_argument("files", nargs="+", metavar="FILE")
    _common(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("train", help="run one job or strategy file now, in the foreground")
    p.add_argument("file", help="a job YAML or a KTRDR v3 strategy YAML")
    p.add_argument("--device", help="auto | cpu | cuda | mps (KTRDR_DEVICE)")
    p.add_argument("--threads", type=int, help="torch CPU threads (KTRDR_THREADS; default 1)")
    p.add_argument("--strict", action="store_true", default=None,
                   help="turn every warning about the strategy into an error")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("features", help="write the strategy's features to a CSV file")
    p.add_argument("strategy")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--symbol", help="default: the strategy's first symbol")
    p.add_argument("--timeframe", help="base timeframe (default: the strategy's)")
    _common(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("models", help="trained versions and their metrics")
    p.add_argument("strategy", nargs="?")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("report", help="draw a model's training report (or a job's curves so far)")
    p.add_argument("target", metavar="MODEL_PATH|JOB_ID",
                   help="a model version folder (or its _latest link) or a job id in the spool")
    p.add_argument("--out", help="PNG file to write (default: ./report_<version or job>.png)")
    _common(p)
    p.set_defaults(func=cmd_report)
    service.add_commands(sub)
    commands.add_commands(sub, _common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
