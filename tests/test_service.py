"""Service files (launchd LaunchAgent, systemd unit), ``ktrdr-daemon service`` and sd_notify.

The CLI runs as a real subprocess with its install folders pointed into tmp; systemd's own
``systemd-analyze verify`` judges the units where it is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import plistlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ktrdr_daemon import service as svc
from ktrdr_daemon.notify import sd_notify

REPO = Path(__file__).resolve().parents[1]
PLIST_KEYS = {"Label", "ProgramArguments", "WorkingDirectory", "EnvironmentVariables", "KeepAlive",
              "ProcessType", "StandardOutPath", "StandardErrorPath", "ExitTimeOut", "RunAtLoad"}


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Path]:
    """A working folder with spool, models and data folders, named the awkward way users do."""
    root = tmp_path / "My Work 100% $HOME"
    paths = {name: root / name for name in ("spool", "models", "data", "logs")}
    for p in paths.values():
        p.mkdir(parents=True)
    return {"root": root, **paths}


def config(machine: dict[str, Path], **overrides: object) -> svc.ServiceConfig:
    values: dict[str, object] = dict(
        name="dev.ktrdr.test", python=svc.venv_python(), workdir=machine["root"],
        spool=machine["spool"], models=machine["models"], data=machine["data"], device="mps",
        env={"KTRDR_STRATEGIES": str(REPO / "config" / "strategies"), "PYTHONUNBUFFERED": "1"},
        log_file=machine["logs"] / "daemon.log")
    values.update(overrides)
    return svc.ServiceConfig(**values)  # type: ignore[arg-type]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KTRDR_") and k not in ("XDG_CONFIG_HOME", "NOTIFY_SOCKET")}
    env.update(HOME=str(tmp_path / "home"), KTRDR_LAUNCH_AGENTS_DIR=str(tmp_path / "agents"),
               KTRDR_SYSTEMD_DIR=str(tmp_path / "units"))
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ktrdr_daemon.cli", "service", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


# --- launchd ---------------------------------------------------------------------------------


def test_plist_has_every_key_with_absolute_existing_paths(machine: dict[str, Path]) -> None:
    agent = plistlib.loads(svc.render_plist(config(machine)))
    assert set(agent) >= PLIST_KEYS
    assert agent["Label"] == "dev.ktrdr.test"
    assert agent["KeepAlive"] == {"SuccessfulExit": False}  # restart on failure only
    assert agent["ProcessType"] == "Interactive"  # Background throttles the GPU
    assert agent["RunAtLoad"] is True
    assert agent["ExitTimeOut"] > 10  # the daemon hands its job back within 10 s
    argv = agent["ProgramArguments"]
    assert argv[1:4] == ["-m", "ktrdr_daemon.cli", "run"]
    assert argv[argv.index("--device") + 1] == "mps"
    named = [argv[0], agent["WorkingDirectory"], *(argv[argv.index(f) + 1]
                                                   for f in ("--spool", "--models", "--data"))]
    for path in named + [str(Path(agent["StandardOutPath"]).parent)]:
        assert Path(path).is_absolute() and Path(path).exists(), path
    assert agent["StandardOutPath"] == agent["StandardErrorPath"]
    assert agent["EnvironmentVariables"]["PYTHONUNBUFFERED"] == "1"


def test_the_launchd_template_has_the_rendered_keys_and_choices(machine: dict[str, Path]) -> None:
    template = plistlib.loads((REPO / "launchd" / "dev.ktrdr.daemon.plist").read_bytes())
    rendered = plistlib.loads(svc.render_plist(config(machine)))
    assert set(template) == set(rendered)
    for key in ("KeepAlive", "ProcessType", "ExitTimeOut", "RunAtLoad", "ThrottleInterval"):
        assert template[key] == rendered[key], key
    assert template["Label"] == svc.LAUNCHD_LABEL
    assert template["ProgramArguments"][1:4] == ["-m", "ktrdr_daemon.cli", "run"]
    assert set(template["EnvironmentVariables"]) >= set(rendered["EnvironmentVariables"])


def test_launchd_refuses_a_system_daemon(tmp_path: Path) -> None:
    done = cli("print", "--launchd", "--system", cwd=tmp_path, env=cli_env(tmp_path))
    assert done.returncode != 0 and "Metal" in done.stderr


# --- systemd ---------------------------------------------------------------------------------


def unit_settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_unit_has_the_keys_that_let_the_daemon_hand_back(machine: dict[str, Path]) -> None:
    unit = svc.render_systemd_unit(config(machine))
    keys = unit_settings(unit)
    assert keys["Type"] == ["notify"] and keys["NotifyAccess"] == ["main"]
    assert keys["Restart"] == ["on-failure"]
    assert keys["KillMode"] == ["mixed"]  # SIGTERM to the daemon alone first
    assert int(keys["TimeoutStopSec"][0]) > 10
    assert keys["WantedBy"] == ["default.target"]
    assert "User" not in keys  # not allowed in a user unit
    assert "RequiresMountsFor" in keys
    system = unit_settings(svc.render_systemd_unit(config(machine, user="ktrdr"), system=True))
    assert system["WantedBy"] == ["multi-user.target"] and system["User"] == ["ktrdr"]


def test_exec_start_round_trips_awkward_paths(machine: dict[str, Path]) -> None:
    cfg = config(machine, device="cuda")
    argv = svc.exec_start_argv(svc.render_systemd_unit(cfg))
    assert argv == svc.daemon_argv(cfg)
    assert argv[argv.index("--spool") + 1] == str(machine["spool"])  # spaces, % and $ intact
    assert svc.plist_argv(svc.render_plist(cfg)) == argv


def test_the_rendered_command_starts_our_cli_from_its_working_folder(
        machine: dict[str, Path]) -> None:
    # The daemon test runs the whole ExecStart; here: python, module and environment are right.
    cfg = config(machine)
    argv = svc.exec_start_argv(svc.render_systemd_unit(cfg))
    assert (Path(argv[0]).parent.parent / "pyvenv.cfg").is_file()  # the venv's python, kept
    done = subprocess.run([*argv[:3], "--help"], cwd=cfg.workdir, env={**cfg.env, "PATH": ""},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "service" in done.stdout


def analyze(tmp_path: Path, unit: str, *, user: bool) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)")
    path = tmp_path / "units" / "ktrdr-daemon-test.service"
    path.parent.mkdir(exist_ok=True)
    path.write_text(unit)
    runtime = tmp_path / "runtime"  # a user manager needs a runtime folder, even offline
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    return subprocess.run([tool, *(["--user"] if user else []), "verify", str(path)],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_systemd_analyze_verify_accepts_the_unit(
        tmp_path: Path, machine: dict[str, Path], system: bool) -> None:
    unit = svc.render_systemd_unit(config(machine), system=system)
    done = analyze(tmp_path, unit, user=not system)
    mine = [line for line in done.stderr.splitlines() if "ktrdr-daemon-test" in line]
    assert done.returncode == 0 and not mine, done.stderr


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path, machine: dict[str, Path]) -> None:
    # The check above can fail: a unit naming a python that is not there is refused.
    unit = svc.render_systemd_unit(config(machine, python=machine["root"] / "no-python"))
    assert analyze(tmp_path, unit, user=True).returncode != 0


# --- the command line ------------------------------------------------------------------------


def test_service_print_renders_the_command_line_settings(tmp_path: Path,
                                                         machine: dict[str, Path]) -> None:
    env = cli_env(tmp_path, KTRDR_EXPIRE_SECONDS="120", KTRDR_SPOOL="/ignored/by/the/flag")
    common = ("--spool", "spool", "--models", str(machine["models"]), "--data", "data")
    done = cli("print", "--systemd", "--device", "cuda", "--name", "gpu0", *common,
               cwd=machine["root"], env=env)
    assert done.returncode == 0, done.stderr
    argv = svc.exec_start_argv(done.stdout)
    assert argv[0] == sys.executable  # the venv's python, not resolved out of the venv
    assert argv[3:] == ["run", "--spool", str(machine["spool"]), "--models", str(machine["models"]),
                        "--device", "cuda", "--data", str(machine["data"])]
    keys = unit_settings(done.stdout)
    assert "KTRDR_EXPIRE_SECONDS=120" in keys["Environment"]
    strategies = str(machine["root"] / "config" / "strategies").replace("%", "%%")
    assert f'"KTRDR_STRATEGIES={strategies}"' in keys["Environment"]  # quoted, $ kept as is
    # % is a specifier everywhere; $ only expands in command lines
    assert keys["WorkingDirectory"] == [str(machine["root"]).replace("%", "%%")]
    assert not (tmp_path / "units").exists()  # print writes nothing

    done = cli("print", "--launchd", *common, "--log-dir", "logs", cwd=machine["root"], env=env)
    assert done.returncode == 0, done.stderr
    agent = plistlib.loads(done.stdout.encode())
    assert agent["Label"] == svc.LAUNCHD_LABEL
    assert agent["ProgramArguments"][3:] == [  # launchd's device is MPS unless told otherwise
        "run", "--spool", str(machine["spool"]), "--models", str(machine["models"]),
        "--device", "mps", "--data", str(machine["data"])]
    assert agent["StandardOutPath"] == str(machine["logs"] / f"{svc.LAUNCHD_LABEL}.log")
    assert agent["EnvironmentVariables"]["KTRDR_EXPIRE_SECONDS"] == "120"


def test_install_and_uninstall_a_user_unit(tmp_path: Path, machine: dict[str, Path]) -> None:
    env = cli_env(tmp_path)
    done = cli("install", "--systemd", "--spool", "spool", "--models", "models",
               cwd=machine["root"], env=env)
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "units" / "ktrdr-daemon.service"
    assert done.stdout.strip() == ("systemctl --user daemon-reload && "
                                   "systemctl --user enable --now ktrdr-daemon.service")
    assert str(machine["spool"]) in svc.exec_start_argv(unit.read_text())

    again = cli("install", "--systemd", "--device", "cpu", cwd=machine["root"], env=env)
    assert "restart ktrdr-daemon.service" in again.stdout  # a replaced unit must restart
    assert svc.exec_start_argv(unit.read_text())[-1] == "cpu"

    wants = unit.parent / "default.target.wants"
    wants.mkdir()
    (wants / unit.name).symlink_to(unit)  # what `systemctl enable` leaves behind
    done = cli("uninstall", "--systemd", cwd=machine["root"], env=env)
    assert done.returncode == 0, done.stderr
    assert "disable --now ktrdr-daemon.service" in done.stdout
    assert not unit.exists() and not (wants / unit.name).is_symlink()
    assert cli("uninstall", "--systemd", cwd=machine["root"], env=env).returncode == 1


def test_user_units_go_under_xdg_config_home(tmp_path: Path, machine: dict[str, Path]) -> None:
    env = cli_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    del env["KTRDR_SYSTEMD_DIR"]
    done = cli("install", "--systemd", "--name", "cpu1.service", cwd=machine["root"], env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "xdg" / "systemd" / "user" / "cpu1.service").is_file()


def test_install_and_uninstall_a_launch_agent(tmp_path: Path, machine: dict[str, Path]) -> None:
    env = cli_env(tmp_path)
    done = cli("install", "--launchd", "--spool", "spool", "--models", "models",
               cwd=machine["root"], env=env)
    assert done.returncode == 0, done.stderr
    plist = tmp_path / "agents" / f"{svc.LAUNCHD_LABEL}.plist"
    assert done.stdout.strip() == f"launchctl bootstrap gui/$(id -u) {shlex.quote(str(plist))}"
    agent = plistlib.loads(plist.read_bytes())
    log_dir = tmp_path / "home" / "Library" / "Logs" / "ktrdr-daemon"
    assert agent["StandardOutPath"] == str(log_dir / f"{svc.LAUNCHD_LABEL}.log")
    assert log_dir.is_dir()  # launchd would not create it

    done = cli("uninstall", "--launchd", cwd=machine["root"], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"launchctl bootout gui/$(id -u)/{svc.LAUNCHD_LABEL}"
    assert not plist.exists()


# --- sd_notify -------------------------------------------------------------------------------


def receive(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    return sock.recv(4096)


def test_sd_notify_sends_to_a_socket_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1\nSTATUS=serving spool")
        assert receive(manager) == b"READY=1\nSTATUS=serving spool"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")
def test_sd_notify_sends_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ktrdr-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("STOPPING=1")
        assert receive(manager) == b"STOPPING=1"


def test_sd_notify_without_a_manager_is_a_quiet_no(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))  # the manager went away
    assert sd_notify("READY=1") is False


# --- the daemon under the unit's own command line -------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="NOTIFY_SOCKET is systemd's")
def test_exec_start_runs_the_daemon_which_says_ready_then_stopping(
        tmp_path: Path, machine: dict[str, Path]) -> None:
    """What systemd sees: READY=1 once the daemon serves, STOPPING=1 and exit 0 on SIGTERM."""
    # A 30 s rescan: a job claimed within seconds of READY was woken by the running watcher.
    env = {**config(machine).env, "KTRDR_RESCAN_SECONDS": "30"}
    cfg = config(machine, device="cpu", data=None, env=env)
    argv = svc.exec_start_argv(svc.render_systemd_unit(cfg))
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(notify))
        manager.settimeout(120)
        env = {**cfg.env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
               "NOTIFY_SOCKET": str(notify), "XDG_RUNTIME_DIR": str(tmp_path)}
        daemon = subprocess.Popen([*argv, "--daemon-id", "unit-test"], cwd=cfg.workdir, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        try:
            ready = manager.recv(4096).decode()
            assert ready.splitlines()[0] == "READY=1"
            # Ready means serving the unit's spool: layout made, heartbeat written, watcher on.
            spool = machine["spool"]
            assert all((spool / d).is_dir() for d in ("incoming", "tmp", "jobs", "daemons"))
            beat = json.loads((spool / "daemons" / "unit-test.json").read_text())
            assert beat["started"] and beat["watcher"] in ("inotify", "polling"), beat
            staged = machine["root"] / "ready.yaml"
            staged.write_text("strategy: rsi_minimal.yaml\noverrides: {training: {epochs: 1}}\n")
            os.rename(staged, spool / "incoming" / "ready.yaml")
            dropped = time.monotonic()
            claim = spool / "jobs" / "ready" / "attempts" / "1.claim"
            while not claim.is_file() and time.monotonic() - dropped < 30:
                time.sleep(0.01)
            waited = time.monotonic() - dropped
            assert waited < 5, f"claimed after {waited:.1f} s: the watcher did not wake it"
            daemon.terminate()
            assert manager.recv(4096) == b"STOPPING=1"
            out, _ = daemon.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)  # the fork server and a worker too
            daemon.wait()
    assert daemon.returncode == 0, out
