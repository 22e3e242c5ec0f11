"""``doctor``: each thing a daemon needs, checked and reported as ok, warn or fail with a fix."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ktrdr_daemon import spool as sp
from ktrdr_daemon.cli_support import EXIT_FAILED, EXIT_OK, settings_from
from ktrdr_daemon.commands import daemon_rows
from ktrdr_daemon.settings import Settings, load_settings


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
    settings = settings_from(args)
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




def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``doctor`` on ``sub`` (argparse subparsers)."""
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
