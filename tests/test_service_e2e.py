"""The daemon as systemd runs it: the unit's own ExecStart, Environment= and WorkingDirectory,
READY=1 on NOTIFY_SOCKET, and a stop the way ``KillMode=mixed`` stops it (SIGTERM to the main
process, then SIGKILL to whatever is left of the group at ``TimeoutStopSec``). The running job
is handed back and a second daemon on the same spool resumes it from the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from daemon_helpers import TIMINGS, Site, job_yaml, process_gone

from ktrdr_daemon import service as svc
from ktrdr_daemon.settings import load_settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="NOTIFY_SOCKET is systemd's"),
]

READY_TIMEOUT_S = 120.0  # torch in the daemon and its fork server, on a loaded 2-core machine
EPOCHS = 6  # rsi_minimal at batch 16: a second or more an epoch; SIGTERM at epoch 2


def _unescape(value: str) -> str:
    return value.replace("%%", "%")


@dataclass
class Unit:
    """A rendered unit file, read back the way systemd reads what the test needs of it."""

    path: Path
    text: str

    def values(self, key: str) -> list[str]:
        return [line.split("=", 1)[1] for line in self.text.splitlines()
                if line.startswith(f"{key}=")]

    @property
    def argv(self) -> list[str]:
        return svc.exec_start_argv(self.text)

    @property
    def environment(self) -> dict[str, str]:
        pairs = (_unescape(word).split("=", 1) for value in self.values("Environment")
                 for word in shlex.split(value))
        return dict(pairs)

    @property
    def workdir(self) -> Path:
        (value,) = self.values("WorkingDirectory")
        return Path(_unescape(value))

    @property
    def stop_timeout(self) -> float:
        (value,) = self.values("TimeoutStopSec")
        return float(value)


def install_unit(site: Site, name: str, daemon_id: str) -> Unit:
    """Render the unit as ``service install --systemd`` would, with this run's settings in the
    installer's environment (so they land in the unit's Environment= lines)."""
    installer_env = {**TIMINGS, "KTRDR_DAEMON_ID": daemon_id,
                     "KTRDR_STRATEGIES": str(site.strategies),
                     "KTRDR_CONFIG": str(site.root / "no-daemon.yaml")}
    settings = load_settings({"spool": site.spool, "models": site.models, "device": "cpu"},
                             env=installer_env)
    cfg = svc.service_config("systemd", settings, name=name, device_given=True,
                             workdir=site.root, env=installer_env)
    path = site.root / "units" / svc.file_name("systemd", name)
    path.parent.mkdir(exist_ok=True)
    path.write_text(svc.render_systemd_unit(cfg))
    return Unit(path, path.read_text())


class Service:
    """One started unit: the main process in its own process group (the unit's cgroup)."""

    def __init__(self, site: Site, unit: Unit, name: str) -> None:
        self.site, self.unit, self.name = site, unit, name
        self.log_path = site.root / f"{name}.journal"
        self.notify_path = site.root / f"{name}.notify"
        self.manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.manager.bind(str(self.notify_path))
        # What a user manager passes on, then the unit's own Environment= on top.
        env = {"PATH": "/usr/bin:/bin", "HOME": str(site.root), "LANG": "C.UTF-8",
               "XDG_RUNTIME_DIR": str(site.runtime), "NOTIFY_SOCKET": str(self.notify_path),
               **unit.environment}
        with open(self.log_path, "wb") as journal:
            self.process = subprocess.Popen(unit.argv, cwd=unit.workdir, env=env,
                                            stdout=journal, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def journal(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> dict[str, float]:
        """Until READY=1; what the spool looks like at that moment, for the caller to judge."""
        self.manager.settimeout(READY_TIMEOUT_S)
        try:
            message = self.manager.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"{self.name}: no READY=1\n{self.journal()}") from None
        assert message.splitlines()[0] == "READY=1", message
        return {"at": time.monotonic()}

    def group(self) -> list[int]:
        pids = []
        for proc in psutil.process_iter():
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                if os.getpgid(proc.pid) == self.process.pid and proc.status() != "zombie":
                    pids.append(proc.pid)
        return pids

    def stop(self) -> tuple[bool, float, list[int]]:
        """``systemctl stop`` under KillMode=mixed: (exited by itself, seconds, pids SIGKILLed)."""
        os.kill(self.process.pid, signal.SIGTERM)
        sent = time.monotonic()
        try:
            self.process.wait(self.unit.stop_timeout)
            by_itself = True
        except subprocess.TimeoutExpired:
            by_itself = False
        took = time.monotonic() - sent
        left = self.group()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        return by_itself, took, left

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self.manager.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[Site, list[Service]]]:
    # Awkward on purpose: the unit must quote and escape its paths (spaces, %, $).
    site = Site(tmp_path / "srv 100% $HOME")
    started: list[Service] = []
    yield site, started
    for service in started:
        service.kill()


def _worker_pid(service: Service, job_id: str, attempt: int) -> int:
    match = re.search(rf"{re.escape(job_id)}: attempt {attempt} started \(pid (\d+)\)",
                      service.journal())
    assert match, service.journal()
    return int(match[1])


def test_a_systemd_stop_hands_the_job_back_and_another_daemon_resumes_it(
        services: tuple[Site, list[Service]]) -> None:
    site, started = services
    began = time.monotonic()
    first_unit = install_unit(site, "ktrdr-first", "e2e-first")
    second_unit = install_unit(site, "ktrdr-second", "e2e-second")
    assert first_unit.argv[3:] == ["run", "--spool", str(site.spool), "--models",
                                   str(site.models), "--device", "cpu"]
    assert first_unit.environment["KTRDR_HEARTBEAT_SECONDS"] == TIMINGS["KTRDR_HEARTBEAT_SECONDS"]
    assert first_unit.workdir == site.root and first_unit.stop_timeout > 10

    first = Service(site, first_unit, "first")
    started.append(first)
    first.wait_ready()
    ready_s = time.monotonic() - began
    # max_attempts 1: attempt 2 can run only because a hand-back does not count.
    job_id = site.drop("e2e.yaml", job_yaml(EPOCHS, batch_size=16, max_attempts=1))
    claim = site.wait_claim(job_id, 1)
    assert claim["daemon"] == "e2e-first"
    # The second daemon starts while the first trains (its start-up costs seconds); it has
    # nothing to claim until the first hands the job back.
    second = Service(site, second_unit, "second")
    started.append(second)
    site.wait_training(job_id, min_epoch=2, attempt=1)
    worker = _worker_pid(first, job_id, 1)

    by_itself, took, left = first.stop()
    assert by_itself and took < 10, f"took {took:.1f} s\n{first.journal()}"
    assert first.process.returncode == 0, first.journal()
    assert worker not in left and process_gone(worker), (worker, left)
    end = site.attempt_end(job_id, 1)
    assert end is not None and end["counts"] is False, site.explain(job_id)
    assert (site.job_dir(job_id) / "checkpoint" / "last.pt").is_file()
    assert not (site.spool / "daemons" / "e2e-first.json").exists()
    stopped_s = time.monotonic() - began

    second.wait_ready()
    result = site.wait_result(job_id, timeout=180)
    assert result["state"] == "completed", site.explain(job_id)
    assert result["attempt"] == 2 and result["daemon"] == "e2e-second"
    resumed = [e["resumed_from_epoch"] for e in site.events(job_id)
               if e.get("type") == "state" and e.get("resumed_from_epoch") is not None]
    assert resumed and min(resumed) >= 1, site.events(job_id)  # past the first epoch
    assert site.versions(job_id) == [Path(result["model_path"])]
    ends = [site.attempt_end(job_id, n) or {} for n in (1, 2)]
    assert not any(e.get("counts") for e in ends), ends  # the budget is untouched
    assert "attempt 1 failed" not in site.log(job_id)

    done_s = time.monotonic() - began
    by_itself, idle_took, _ = second.stop()  # an idle daemon stops at once
    assert by_itself and second.process.returncode == 0, second.journal()
    print(f"ready {ready_s:.1f} s, handed back at {stopped_s:.1f} s (SIGTERM -> exit "
          f"{took:.1f} s), resumed and completed at {done_s:.1f} s, idle stop {idle_took:.1f} s")



# --- doctor: is the service installed, and does its daemon beat? -----------------------------


def _cli(site: Site, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ktrdr_daemon.cli", *args], cwd=site.root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _doctor_service(site: Site, env: dict[str, str]) -> dict[str, str]:
    out, err = _cli(site, env, "doctor", "--json", "--spool", str(site.spool), "--models",
                    str(site.models), "--device", "cpu").communicate(timeout=180)
    checks = {c["name"]: c for c in json.loads(out or "[]")}
    assert "service" in checks, out + err
    return checks["service"]


def test_doctor_sees_the_installed_service_and_whether_its_daemon_beats(
        services: tuple[Site, list[Service]]) -> None:
    from ktrdr_daemon.daemon import default_daemon_id

    site, started = services
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KTRDR_") and k not in ("XDG_CONFIG_HOME", "NOTIFY_SOCKET")}
    env.update(TIMINGS, HOME=str(site.root / "home"), KTRDR_SYSTEMD_DIR=str(site.root / "units"),
               KTRDR_LAUNCH_AGENTS_DIR=str(site.root / "agents"))
    common = ("--spool", str(site.spool), "--models", str(site.models), "--strategies",
              str(site.strategies))
    installs = [_cli(site, env, "service", "install", "--systemd", "--device", "cpu", *common),
                _cli(site, env, "service", "install", "--launchd", "--log-dir", "logs", *common)]
    for install in installs:
        _, err = install.communicate(timeout=120)
        assert install.returncode == 0, err
    unit_path = site.root / "units" / f"{svc.SYSTEMD_NAME}.service"
    plist = site.root / "agents" / f"{svc.LAUNCHD_LABEL}.plist"
    # Neither file names a daemon id: each runs the default one, <host>-<device>.
    cpu, mps = default_daemon_id("cpu"), default_daemon_id("mps")

    check = _doctor_service(site, env)
    assert check["status"] == "warn", check
    assert f"systemd unit {unit_path} installed; daemon {cpu} on {site.spool}: heartbeat not " \
           "live (no heartbeat file)" in check["detail"], check
    assert f"launchd agent {plist} installed; daemon {mps}" in check["detail"], check
    assert "enable --now ktrdr-daemon.service" in check["fix"], check  # how to start it

    unit = Unit(unit_path, unit_path.read_text())
    service = Service(site, unit, "doctor")
    started.append(service)
    service.wait_ready()
    check = _doctor_service(site, env)
    assert f"daemon {cpu} on {site.spool}: heartbeat live" in check["detail"], check
    assert f"daemon {mps} on {site.spool}: heartbeat not live" in check["detail"], check
    assert check["status"] == "warn"  # the agent's daemon still is not running
    by_itself, _, _ = service.stop()
    assert by_itself
