"""``models``: what the model store holds (each version's metrics and how it was trained), and
``models rm``: take versions out of it.

Read-only and fast: the store's JSON documents through :mod:`pipeline.versions` and the
strategies root's names through the safe YAML loader; never torch, pandas or pydantic (a
listing that loaded the strategy schema and torch paid seconds of CPU for a few small files).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ktrdr_daemon.cli_support import EXIT_FAILED, EXIT_OK, err, settings_from
from pipeline.versions import VersionInfo, list_versions, sanitize_name, take_out

# --sort: higher is better for scores, lower for errors (mae).
SCORES = ("test_accuracy", "f1", "precision", "recall", "best_val_accuracy",
          "directional_accuracy")
ERRORS = ("mae",)
_MAX_STRATEGY_BYTES = 1 << 20
_VERSION_ARG = re.compile(r"^(?:(?P<tf>.+)_)?v?(?P<n>\d+)$")


# --- listing ----------------------------------------------------------------------------------


def strategy_files(root: Path) -> dict[str, Path]:
    """``{name: file}`` of the strategy files in ``root``: the name the store files it under
    (``name:`` sanitized, as training does), else the file's stem. Only the YAML is read (not
    the schema): a file that is not a YAML mapping is no strategy and is left out."""
    import yaml

    from pipeline import safe_yaml

    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.glob("*.y*ml")):
        try:
            if path.stat().st_size > _MAX_STRATEGY_BYTES or not path.is_file():
                continue
            data = safe_yaml.load(path.read_bytes())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            name = data.get("name")
            found.setdefault(sanitize_name(name) if isinstance(name, str) and name.strip()
                             else path.stem, path)
    return found


def version_row(v: VersionInfo) -> dict[str, Any]:
    """One version as ``models --json`` prints it: path, date, headline metrics, report, and
    how it was trained (job, attempt, seed, device, date range, epochs)."""
    report = v.path / "report.png"
    return {"version": v.name, "path": str(v.path), "created_at": v.created_at,
            **v.headline,  # ours or KTRDR's metrics, wherever the writer put them
            "report": str(report) if report.is_file() else None,
            **v.provenance}


def _sort_key(metric: str) -> Callable[[dict[str, Any]], tuple[bool, float]]:
    """Best first; a version without the metric (a regression model's f1) last."""
    sign = 1.0 if metric in ERRORS else -1.0

    def key(row: dict[str, Any]) -> tuple[bool, float]:
        value = row.get(metric)
        return (not isinstance(value, int | float), sign * value if isinstance(
            value, int | float) else 0.0)
    return key


def _unknown(name: str, candidates: set[str], settings: Any) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else (
        f"; known: {', '.join(sorted(candidates))}" if candidates and len(candidates) <= 12 else "")
    return (f"{name}: no such strategy (no version in {settings.models} and no strategy file "
            f"in {settings.strategies}){hint}")


def cmd_models(args: argparse.Namespace) -> int:
    """Trained versions with their metrics and provenance; every known strategy, trained or
    not. A name that is neither trained nor a strategy file is an error (exit 1)."""
    if args.strategy == "rm":
        return cmd_models_rm(args)
    if args.rest:
        err(f"models takes one strategy name (got {' '.join([args.strategy, *args.rest])}); "
            "to remove versions: models rm STRATEGY VERSION...")
        return EXIT_FAILED
    settings = settings_from(args)
    wanted = args.strategy
    files = strategy_files(settings.strategies)
    if wanted is not None and wanted not in files:
        wanted = next((n for n, p in files.items() if p.stem == wanted), wanted)
    versions = list_versions(settings.models, wanted) if (
        wanted is None or sanitize_name(wanted) == wanted) else []
    if wanted is not None and not versions and wanted not in files:
        err(_unknown(wanted, set(files) | _store_names(settings.models), settings))
        return EXIT_FAILED
    known = {v.strategy for v in versions} | ({wanted} if wanted else set(files))
    rows = []
    for name in sorted(known):
        mine = [version_row(v) for v in versions if v.strategy == name]
        if args.sort:
            mine.sort(key=_sort_key(args.sort))
        rows.append({"strategy": name, "trained": bool(mine), "versions": mine})
    if args.sort:  # the strategy with the best version first, untrained ones last
        rows.sort(key=lambda r: _sort_key(args.sort)(r["versions"][0] if r["versions"] else {}))
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        print(f"{row['strategy']}: {'trained' if row['trained'] else 'untrained'}")
        for v in row["versions"]:
            _print_version(v)
    return EXIT_OK


def _store_names(root: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")}
    except OSError:
        return set()


def _print_version(v: dict[str, Any]) -> None:
    if v.get("mae") is not None:  # a regression model
        dirn, mae = _fmt(v.get("directional_accuracy")), f"{v['mae']:.4g}"
        print(f"  {v['version']:<10} dir {dirn}{_base(v.get('baseline_direction'))}  "
              f"mae {mae}  {v['created_at']}  {v['path']}")
    else:
        acc, f1, val = (_fmt(v[k]) for k in ("test_accuracy", "f1", "best_val_accuracy"))
        print(f"  {v['version']:<10} acc {acc}{_base(v.get('baseline_accuracy'))}  f1 {f1}  "
              f"val {val}  {v['created_at']}  {v['path']}")
    print(f"  {'':<10} {_trained_how(v)}")
    print(f"  {'':<10} report {v['report'] or '(none: ktrdr-daemon report PATH)'}")


def _trained_how(v: dict[str, Any]) -> str:
    """``job J (attempt 2)  seed 42  2024-01-01..2024-06-30  epochs 2/5  cpu``, "-" where the
    writer recorded nothing (KTRDR's own versions have no job)."""
    job = v.get("job_id") or "-"
    if v.get("job_id") and v.get("attempt"):
        job += f" (attempt {v['attempt']})"
    dates = f"{v.get('start_date') or '-'}..{v.get('end_date') or '-'}"
    run, planned = v.get("epochs_run"), v.get("epochs")
    epochs = "-" if run is None else (f"{run}/{planned}" if planned not in (None, run)
                                      else str(run))
    seed = "-" if v.get("seed") is None else v["seed"]
    return f"job {job}  seed {seed}  {dates}  epochs {epochs}  {v.get('device') or '-'}"


def _base(value: float | None) -> str:
    """`` (base 0.663)``: the majority baseline beside the score, where the version has one."""
    return "" if value is None else f" (base {value:.3f})"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# --- models rm --------------------------------------------------------------------------------


def cmd_models_rm(args: argparse.Namespace) -> int:
    """Remove versions of one strategy: each is renamed out of the store in one step (a reader
    sees all of it or none), ``{tf}_latest`` moves to the newest left (or goes), then its files
    are deleted. A version whose job is still running is refused: its result would name it."""
    if len(args.rest) < 2:
        err("usage: models rm STRATEGY VERSION... (a version as `models` lists it, e.g. 1h_v3)")
        return EXIT_FAILED
    settings = settings_from(args)
    strategy, wanted = args.rest[0], args.rest[1:]
    versions = list_versions(settings.models, strategy) if sanitize_name(strategy) == strategy \
        else []
    if not versions:
        files = strategy_files(settings.strategies)
        err(f"{strategy}: no versions to remove" if strategy in files or (
            settings.models / strategy).is_dir() else _unknown(
            strategy, set(files) | _store_names(settings.models), settings))
        return EXIT_FAILED
    chosen, problems = _choose(versions, wanted)
    problems += [_still_running(settings, v) for v in chosen]
    if any(problems):
        for problem in filter(None, problems):
            err(problem)
        return EXIT_FAILED  # nothing removed: all or none of what was asked
    removed = []
    for v in chosen:
        gone = take_out(v.path, f"rm-{strategy}-{v.name}-{os.getpid()}-{os.urandom(6).hex()}")
        removed.append({"strategy": strategy, "version": v.name, "path": str(v.path),
                        "removed": gone})
        if not args.json:
            print(f"removed {strategy} {v.name} ({v.path})" if gone else
                  f"{strategy} {v.name}: already removed by someone else")
    latest = _latest_of(settings.models / strategy, {v.timeframe for v in chosen})
    if args.json:
        print(json.dumps({"removed": removed, "latest": latest}, indent=2))
    else:
        for tf, target in latest.items():
            print(f"{tf}_latest -> {target}" if target else f"{tf}_latest: removed (no version "
                  "left)")
    return EXIT_OK


def _choose(versions: list[VersionInfo], wanted: list[str]) -> tuple[list[VersionInfo],
                                                                       list[str | None]]:
    """The versions named ``1h_v3`` (or ``v3``/``3`` when one timeframe has that N)."""
    chosen: list[VersionInfo] = []
    problems: list[str | None] = []
    names = [v.name for v in versions]
    for text in wanted:
        match = _VERSION_ARG.match(text)
        hits = [] if match is None else [
            v for v in versions if v.version == int(match["n"])
            and match["tf"] in (None, v.timeframe)]
        if len(hits) == 1:
            if hits[0] not in chosen:
                chosen.append(hits[0])
        elif len(hits) > 1:
            problems.append(f"{text}: ambiguous, say which: {', '.join(v.name for v in hits)}")
        else:
            problems.append(f"{versions[0].strategy} has no version {text!r}; it has "
                            f"{', '.join(names)}")
    return chosen, problems


def _still_running(settings: Any, v: VersionInfo) -> str | None:
    """A message when the job that published ``v`` is still running (its result is about to
    name the version); None otherwise, or when the spool does not know the job."""
    job_id = v.metadata.get("job_id")
    if not isinstance(job_id, str):
        return None
    from ktrdr_daemon import spool as sp

    spool = sp.Spool(settings.spool)
    try:
        if not spool.job_dir(job_id).is_dir() or sp.job_state(spool, job_id) != "running":
            return None
    except (OSError, ValueError):
        return None
    return (f"{v.strategy} {v.name}: job {job_id} that published it is still running; wait "
            f"for it (`ktrdr-daemon tail {job_id}`) or cancel it first")


def _latest_of(parent: Path, timeframes: set[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for tf in sorted(timeframes):
        try:
            out[tf] = os.readlink(parent / f"{tf}_latest")
        except OSError:
            out[tf] = None
    return out


def add_command(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``models`` (and its ``rm`` form) on ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "models", help="trained versions, their metrics and how they were trained; models rm",
        usage="%(prog)s [STRATEGY] [--sort METRIC] [--json]\n"
              "       %(prog)s rm STRATEGY VERSION... [--json]",
        description="List the model store: per version its test metrics, job, seed, date "
                    "range, epochs (run/planned) and device. `models rm STRATEGY VERSION...` "
                    "removes versions (e.g. `models rm rsi_minimal 1h_v3`); {tf}_latest moves "
                    "to the newest version left.")
    p.add_argument("strategy", nargs="?", metavar="STRATEGY",
                   help="only this strategy (an unknown name is an error); `rm` removes")
    p.add_argument("rest", nargs="*", metavar="VERSION", help=argparse.SUPPRESS)
    p.add_argument("--sort", choices=(*SCORES, *ERRORS), metavar="METRIC",
                   help=f"best version first: descending for scores ({', '.join(SCORES)}), "
                        f"ascending for errors ({', '.join(ERRORS)}); strategies by their best")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_models)
