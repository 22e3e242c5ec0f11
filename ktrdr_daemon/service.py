"""``ktrdr-daemon service``: a launchd LaunchAgent or a systemd unit that runs ``ktrdr-daemon run``.

The rendering is pure: a :class:`ServiceConfig` of absolute paths in, file contents out. Only
:func:`cmd_service` looks at this machine (the venv's python, the working folder, settings) and
writes files. What each key is for, where the choice is not obvious:

- launchd: a per-user *agent* (``~/Library/LaunchAgents``, bootstrapped into ``gui/<uid>``), not a
  system daemon, because Metal (MPS) is not available to background system daemons.
  ``ProcessType=Interactive`` because ``Background`` throttles the GPU and I/O. ``KeepAlive``
  ``{SuccessfulExit: false}`` restarts a daemon that failed, not one that was stopped.
  ``ExitTimeOut`` gives the SIGTERM hand-back (within 10 s, spool spec section 6) room before
  SIGKILL. ``ProgramArguments`` names the venv python absolutely: launchd's PATH is system folders.
- systemd: ``Type=notify`` (the daemon says ``READY=1`` once it serves, see ``notify.py``) with
  ``NotifyAccess=main``; ``KillMode=mixed`` sends SIGTERM to the daemon only, so it can checkpoint
  and hand its job back before the rest of the group is killed at ``TimeoutStopSec``;
  ``RequiresMountsFor`` waits for the spool's and the models' file systems.
"""

from __future__ import annotations

import argparse
import getpass
import os
import plistlib
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ktrdr_daemon.settings import CONFIG_FILE, Settings, load_settings

LAUNCHD_LABEL = "dev.ktrdr.daemon"
SYSTEMD_NAME = "ktrdr-daemon"
STOP_TIMEOUT_S = 30  # the daemon hands its job back within 10 s; this is the margin before SIGKILL
RESTART_DELAY_S = 5
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")
# Settings the unit passes as flags of `run`; every other KTRDR_<SETTING> set at install time goes
# into the unit's environment, so the service runs with the settings its installer saw.
_FLAG_SETTINGS = ("spool", "models", "data", "device")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything a service file says, already absolute: render functions add nothing."""

    name: str  # launchd label, or systemd unit name without ".service"
    python: Path  # the venv's python (not resolved through its symlink: that leaves the venv)
    workdir: Path
    spool: Path
    models: Path
    device: str
    data: Path | None = None  # None: the bundled sample data
    env: Mapping[str, str] = field(default_factory=dict)
    log_file: Path | None = None  # launchd's stdout and stderr; systemd uses the journal
    user: str | None = None  # system units only: who the daemon runs as


def daemon_argv(cfg: ServiceConfig) -> list[str]:
    """The exact command line both service managers run."""
    argv = [str(cfg.python), "-m", "ktrdr_daemon.cli", "run",
            "--spool", str(cfg.spool), "--models", str(cfg.models), "--device", cfg.device]
    if cfg.data is not None:
        argv += ["--data", str(cfg.data)]
    return argv


# --- launchd ---------------------------------------------------------------------------------


def render_plist(cfg: ServiceConfig) -> bytes:
    """The LaunchAgent property list (launchd.plist(5))."""
    agent: dict[str, object] = {
        "Label": cfg.name,
        "ProgramArguments": daemon_argv(cfg),
        "WorkingDirectory": str(cfg.workdir),
        "EnvironmentVariables": dict(cfg.env),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Interactive",
        "ExitTimeOut": STOP_TIMEOUT_S,
        "ThrottleInterval": RESTART_DELAY_S,
    }
    if cfg.log_file is not None:
        # One file for both: the daemon logs to stderr, and one `tail -f` shows everything.
        agent["StandardOutPath"] = agent["StandardErrorPath"] = str(cfg.log_file)
    return plistlib.dumps(agent, sort_keys=False)


def plist_argv(plist: bytes) -> list[str]:
    """``ProgramArguments`` of a rendered plist: the command line launchd will run."""
    return list(plistlib.loads(plist)["ProgramArguments"])


# --- systemd ---------------------------------------------------------------------------------


def _escape(value: str, *, command: bool = False) -> str:
    """Keep systemd from expanding specifiers (``%``), and variables (``$``, command lines only)."""
    value = value.replace("%", "%%")
    return value.replace("$", "$$") if command else value


def _quote(word: str, *, command: bool = False) -> str:
    """One word of a command line or a path list (systemd.service(5), "Command lines")."""
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return _escape(word, command=command)
    escaped = _escape(word, command=command).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_systemd_unit(cfg: ServiceConfig, *, system: bool = False) -> str:
    """The unit file (systemd.service(5)); a user unit unless ``system``."""
    mounts = [cfg.spool, cfg.models] + ([cfg.data] if cfg.data is not None else [])
    lines = [
        "[Unit]",
        f"Description=ktrdr-daemon: train KTRDR strategies dropped into {_escape(str(cfg.spool))}",
        "RequiresMountsFor=" + " ".join(_quote(str(p)) for p in dict.fromkeys(mounts)),
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(_quote(w, command=True) for w in daemon_argv(cfg)),
        f"WorkingDirectory={_escape(str(cfg.workdir))}",
    ]
    lines += [f"Environment={_quote(f'{k}={v}')}" for k, v in cfg.env.items()]
    if system and cfg.user:
        lines.append(f"User={cfg.user}")
    lines += [
        "Restart=on-failure",
        f"RestartSec={RESTART_DELAY_S}",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={STOP_TIMEOUT_S}",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
        "",
    ]
    return "\n".join(lines)


def exec_start_argv(unit: str) -> list[str]:
    """``ExecStart`` of a rendered unit as an argv: what systemd will run, for tests to run too."""
    for line in unit.splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line.removeprefix("ExecStart="))
            return [w.replace("%%", "%").replace("$$", "$") for w in words]
    raise ValueError("the unit has no ExecStart= line")


# --- this machine ----------------------------------------------------------------------------


def install_dir(kind: str, *, system: bool = False, env: Mapping[str, str] | None = None) -> Path:
    """Where the file goes; ``KTRDR_LAUNCH_AGENTS_DIR`` / ``KTRDR_SYSTEMD_DIR`` override it."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if kind == "launchd":
        return Path(env.get("KTRDR_LAUNCH_AGENTS_DIR") or home / "Library" / "LaunchAgents")
    if env.get("KTRDR_SYSTEMD_DIR"):
        return Path(env["KTRDR_SYSTEMD_DIR"])
    if system:
        return Path("/etc/systemd/system")
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "systemd" / "user"


def file_name(kind: str, name: str) -> str:
    return f"{name}.plist" if kind == "launchd" else f"{name}.service"


def load_command(kind: str, name: str, path: Path, *, system: bool = False,
                 replacing: bool = False) -> str:
    """The one shell command that starts the installed service (and restarts a replaced one)."""
    if kind == "launchd":
        start = f"launchctl bootstrap gui/$(id -u) {shlex.quote(str(path))}"
        # bootstrap refuses a label that is still loaded; bootout stops it (SIGTERM, hand-back).
        return f"launchctl bootout gui/$(id -u)/{name}; {start}" if replacing else start
    ctl = "systemctl" if system else "systemctl --user"
    unit = f"{name}.service"
    if replacing:  # `enable --now` would leave the old process running
        return f"{ctl} daemon-reload && {ctl} enable {unit} && {ctl} restart {unit}"
    return f"{ctl} daemon-reload && {ctl} enable --now {unit}"


def unload_command(kind: str, name: str, *, system: bool = False) -> str:
    if kind == "launchd":
        return f"launchctl bootout gui/$(id -u)/{name}"
    ctl = "systemctl" if system else "systemctl --user"
    return f"{ctl} disable --now {name}.service && {ctl} daemon-reload"


def absolute(path: Path) -> Path:
    return path.expanduser().resolve()


def venv_python() -> Path:
    """The python running us, as the venv names it (``.venv/bin/python``, a symlink we keep)."""
    return Path(sys.executable).absolute()


def service_config(
    kind: str,
    settings: Settings,
    *,
    name: str,
    device_given: bool,
    workdir: Path,
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    system: bool = False,
) -> ServiceConfig:
    """Resolve settings into absolute paths (relative ones against the folder we run in)."""
    env = os.environ if env is None else env
    workdir = absolute(workdir)

    extra: dict[str, str] = {"KTRDR_STRATEGIES": str(absolute(settings.strategies))}
    config = absolute(Path(env.get("KTRDR_CONFIG", CONFIG_FILE)))
    if config.is_file():
        extra["KTRDR_CONFIG"] = str(config)
    for setting in sorted(Settings.__dataclass_fields__):
        key = f"KTRDR_{setting.upper()}"
        if setting not in _FLAG_SETTINGS and key not in extra and env.get(key):
            extra[key] = env[key]
    extra["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file or journal as they happen
    # A Mac agent asks for MPS explicitly: a daemon that silently fell back to CPU would hide it.
    device = settings.device if device_given or kind != "launchd" else "mps"
    user = None
    if system:
        user = env.get("SUDO_USER") or getpass.getuser()
        user = None if user == "root" else user
    return ServiceConfig(
        name=name, python=venv_python(), workdir=workdir,
        spool=absolute(settings.spool), models=absolute(settings.models), device=device,
        data=None if settings.data is None else absolute(settings.data), env=extra,
        log_file=None if kind != "launchd" else
        absolute(log_dir or Path("~/Library/Logs/ktrdr-daemon")) / f"{name}.log",
        user=user,
    )


def render(kind: str, cfg: ServiceConfig, *, system: bool = False) -> bytes:
    if kind == "launchd":
        return render_plist(cfg)
    return render_systemd_unit(cfg, system=system).encode()


# --- command line ----------------------------------------------------------------------------


def _kind(args: argparse.Namespace) -> str:
    if args.launchd and args.system:
        raise SystemExit("--system is for systemd only: a launchd system daemon cannot use Metal "
                         "(MPS); install the per-user LaunchAgent instead")
    return "launchd" if args.launchd else "systemd"


def _name(args: argparse.Namespace, kind: str) -> str:
    name = args.name or (LAUNCHD_LABEL if kind == "launchd" else SYSTEMD_NAME)
    name = name.removesuffix(".plist" if kind == "launchd" else ".service")
    if not _NAME.fullmatch(name):
        raise SystemExit(f"--name {args.name!r}: use letters, digits and _.@- only")
    return name


def cmd_service(args: argparse.Namespace) -> int:
    kind = _kind(args)
    name = _name(args, kind)
    path = install_dir(kind, system=args.system) / file_name(kind, name)
    if args.action == "uninstall":
        if not path.exists():
            print(f"nothing to remove: {path} does not exist", file=sys.stderr)
            return 1
        path.unlink()
        if kind == "systemd":  # what `disable` removes; older systemd refuses once the file is gone
            for wants in path.parent.glob("*.wants"):
                if (wants / path.name).is_symlink():
                    (wants / path.name).unlink()
        print(f"removed {path}; to stop the running daemon:", file=sys.stderr)
        print(unload_command(kind, name, system=args.system))
        return 0
    flags = {n: getattr(args, n) for n in (*_FLAG_SETTINGS, "strategies")}
    settings = load_settings(flags)
    cfg = service_config(kind, settings, name=name, device_given=args.device is not None,
                         workdir=Path(args.workdir or Path.cwd()), log_dir=args.log_dir,
                         system=args.system)
    content = render(kind, cfg, system=args.system)
    if args.action == "print":
        sys.stdout.buffer.write(content)
        return 0
    for folder in (cfg.spool, cfg.models):
        if not folder.is_dir():
            print(f"note: {folder} does not exist yet", file=sys.stderr)
    if cfg.log_file is not None:
        cfg.log_file.parent.mkdir(parents=True, exist_ok=True)  # launchd does not create it
    replacing = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    tmp.replace(path)
    print(f"wrote {path}; to start it:", file=sys.stderr)
    print(load_command(kind, name, path, system=args.system, replacing=replacing))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``service install|uninstall|print`` on the CLI's subcommands."""
    service = subparsers.add_parser(
        "service", help="write a launchd LaunchAgent or systemd unit that runs the daemon")
    actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("install", "write the file with this machine's absolute paths; prints the command that "
                    "loads it"),
        ("uninstall", "remove the file; prints the command that stops the daemon"),
        ("print", "show the file without writing it"),
    ):
        p = actions.add_parser(action, help=text, description=text)
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--launchd", action="store_true",
                           help="a per-user LaunchAgent (macOS; bootstrapped into gui/<uid>, or "
                                "user/<uid> on a Mac with no one logged in)")
        which.add_argument("--systemd", action="store_true", help="a systemd unit (Linux)")
        p.add_argument("--system", action="store_true",
                       help="systemd: a system unit in /etc/systemd/system (default: a user unit)")
        p.add_argument("--name", help=f"launchd label (default {LAUNCHD_LABEL}) or systemd unit "
                                      f"name (default {SYSTEMD_NAME})")
        if action == "uninstall":
            p.set_defaults(func=cmd_service, action=action)
            continue
        p.add_argument("--device", help="auto | cpu | cuda | mps (KTRDR_DEVICE; default: mps for "
                                        "launchd, else the setting)")
        p.add_argument("--spool", help="spool folder (KTRDR_SPOOL; default ./spool)")
        p.add_argument("--models", help="model store root (KTRDR_MODELS; default ./models)")
        p.add_argument("--data", help="price data root (KTRDR_DATA; default: bundled sample data)")
        p.add_argument("--strategies", help="strategies root (KTRDR_STRATEGIES)")
        p.add_argument("--workdir", help="the daemon's working folder (default: this one)")
        p.add_argument("--log-dir", type=Path,
                       help="launchd: folder of the daemon's log (default ~/Library/Logs/"
                            "ktrdr-daemon); systemd logs to the journal")
        p.set_defaults(func=cmd_service, action=action)
