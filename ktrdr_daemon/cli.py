"""``ktrdr-daemon``: the command line (spool spec section 7)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ktrdr_daemon import commands, completion, model_commands, service
from ktrdr_daemon.cli_support import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from ktrdr_daemon.completion import VersionAction
from ktrdr_daemon.settings import Settings, SettingsError, load_settings
from pipeline.errors import PipelineError


def _settings(args: argparse.Namespace) -> Settings:
    names = ("spool", "models", "data", "strategies", "device", "slots", "threads", "daemon_id",
             "strict", "observer")
    return load_settings({n: getattr(args, n, None) for n in names})


def cmd_train(args: argparse.Namespace) -> int:
    """Run one job or strategy file now, in the foreground, through the daemon's own code path."""
    settings = _settings(args)  # before the heavy imports: a bad setting is said at once
    from ktrdr_daemon.console import TerminalReporter
    from pipeline.job import load_job
    from pipeline.run import run_training
    from pipeline.stop import StopToken

    job = load_job(Path(args.file), strategies_root=settings.strategies, strict=settings.strict)
    reporter = TerminalReporter()
    stop = StopToken()
    try:
        result = run_training(job, data_root=settings.data_root, models_root=settings.models,
                              device=settings.device, threads=settings.threads,
                              on_event=reporter, stop=stop, strict=settings.strict)
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
HEADLINE = ("test_accuracy", "baseline_accuracy", "baseline_class", "f1", "output_format",
            "test_loss", "mae", "rmse", "directional_accuracy", "baseline_direction",
            "spearman_ic", "threshold", "signal_counts")


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


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon in the foreground (what launchd and systemd run).

    On a terminal (or with ``--show``) every job it starts is drawn live, as ``tail`` does.
    """
    settings = _settings(args)  # before the heavy imports: a bad setting is said at once
    import logging
    import threading

    from ktrdr_daemon import spool as sp
    from ktrdr_daemon.daemon import Daemon

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
        raise SettingsError(f"--time: {exc}") from None
    for flag, value, low in (("--max-jobs", args.max_jobs, 1), ("--gpus-per-job",
                             args.gpus_per_job, 0), ("--max-requeues", args.max_requeues, 0)):
        if value is not None and value < low:
            raise SettingsError(f"{flag}: {value} is not allowed; it must be an integer >= {low}")
    if args.max_jobs:
        settings.slots = args.max_jobs
    return SlurmOptions(partition=args.partition, gpus_per_job=args.gpus_per_job,
                        time=args.time, max_jobs=settings.slots, max_requeues=args.max_requeues)


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate each file (rewritten by --set, --priority, --seeds, --group when given), then
    publish it atomically into incoming/; print the job ids."""
    from ktrdr_daemon import drop_edits as de
    from ktrdr_daemon import spool as sp
    from ktrdr_daemon.validate import validate_job

    settings = _settings(args)
    try:
        edits = de.Edits(sets=[de.parse_set(text) for text in args.set or []],
                         priority=args.priority,
                         seeds=de.parse_seeds(args.seeds) if args.seeds else [],
                         group=de.check_group(args.group) if args.group else None)
    except de.EditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spool = sp.Spool(settings.spool)
    spool.ensure_layout()
    status = EXIT_OK
    for name in args.files:
        path = Path(name)
        mine = edits
        if edits.seeds and edits.group is None:  # each file its own group
            mine = de.Edits(edits.sets, edits.priority, edits.seeds, de.default_group(path))
        try:
            drops = de.drops_for(path, path.read_bytes(), mine, settings.strategies)
            for drop_name, data in drops:
                body, _priority, execution = sp.parse_drop(data, drop_name)
                validate_job(body, drop_name, settings)
        except OSError as exc:
            print(f"error: {name}: cannot read the file: {exc.strerror}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        except (ValueError, PipelineError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        wants = sp.wants_gpu(execution)
        if wants and not _gpu_alive(spool):
            print(f"error: {path.name}: execution.{wants} and no GPU daemon is alive",
                  file=sys.stderr)
            status = EXIT_FAILED
            continue
        for drop_name, data in drops:
            print(sp.submit_drop(spool, data, drop_name), flush=True)
        if mine.seeds:
            print(f"group {mine.group}: {len(drops)} jobs, seeds {args.seeds} "
                  f"(ktrdr-daemon ls --group {mine.group})", file=sys.stderr)
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


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line exits 64 (EX_USAGE) rather than argparse's 2, which
    ``tail`` and ``wait`` use for "cancelled": a script can tell a typo from a cancelled job."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ktrdr-daemon",
        description="Train KTRDR neuro-fuzzy strategies from a spool folder.")
    parser.add_argument("--version", action=VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the daemon, in the foreground")
    p.add_argument("--device", help="auto | cpu | cuda | mps (KTRDR_DEVICE)")
    # Settings flags stay text: load_settings checks them as it checks KTRDR_* and the config.
    p.add_argument("--slots", help="jobs run at once, >= 1 (KTRDR_SLOTS; default 1)")
    p.add_argument("--threads", help="torch CPU threads per job, >= 1 (KTRDR_THREADS; "
                   "default 1)")
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

    p = sub.add_parser(
        "submit", help="validate job files and drop them into the spool",
        description="Validate each job or strategy file, then drop it into the spool's "
        "incoming/ folder; prints each job id. --set, --priority, --seeds and --group rewrite "
        "the drop (your file is never modified); a bare strategy file is wrapped into a job.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set a key, repeatable: a job key (seed=7, start=2017-05-01, "
                   "execution.max_attempts=5) or a strategy key into the job's overrides "
                   "(training.epochs=5); VALUE is YAML, so 5 is a number")
    p.add_argument("--priority", type=int, metavar="N",
                   help="higher runs first (default: the file's, else 0)")
    p.add_argument("--seeds", metavar="LIST",
                   help="one job per seed, e.g. 1-10, 1,3,5 or 1-3,7; they share a group")
    p.add_argument("--group", metavar="NAME",
                   help="tag the jobs with this group (default with --seeds: "
                   "<file stem>-<6 hex>); `ls --group NAME` lists them")
    _common(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("train", help="run one job or strategy file now, in the foreground")
    p.add_argument("file", help="a job YAML or a KTRDR v3 strategy YAML")
    p.add_argument("--device", help="auto | cpu | cuda | mps (KTRDR_DEVICE)")
    p.add_argument("--threads", help="torch CPU threads, >= 1 (KTRDR_THREADS; default 1)")
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

    model_commands.add_commands(sub, _common)
    service.add_commands(sub)
    commands.add_commands(sub, _common)
    completion.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    completion.autocomplete(parser)  # answers the shell's completion request, else returns
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:  # a flag, KTRDR_* variable or config value: one line
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # `ktrdr-daemon ls | head`: the reader has what it wanted. Point stdout at /dev/null so
        # the interpreter's final flush cannot raise again, and end quietly, as `cat` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
