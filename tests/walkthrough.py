"""A new user at a terminal, for the walk-through tests (tests/test_walkthrough_*.py).

:class:`User` runs ``ktrdr-daemon`` as a subprocess from a project folder of its own, the way a
person types it after ``source .venv/bin/activate``, and keeps what a person reads: the exit
status, stdout and stderr. Nothing is called in process: the point is what the command prints.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "ktrdr_daemon.cli"]


@dataclass
class Said:
    """What one command left on the screen."""

    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class User:
    """A user in ``home``, a copy of the project's config/ (the example strategies) and a fresh
    spool and model store; the bundled sample data is the data root."""

    def __init__(self, home: Path) -> None:
        self.home = home
        shutil.copytree(ROOT / "config", home / "config",
                        ignore=shutil.ignore_patterns("daemon.yaml"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
        self.env["PYTHONPATH"] = str(ROOT)
        self.env["KTRDR_CONFIG"] = os.devnull  # never the developer's config/daemon.yaml

    def run(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None,
            stdin: str | None = None) -> Said:
        """``ktrdr-daemon ARGS...`` in the user's folder; waits for it to end."""
        proc = subprocess.run([*CLI, *args], cwd=self.home, capture_output=True, text=True,
                              timeout=timeout, env={**self.env, **(env or {})}, input=stdin)
        return Said(proc.returncode, proc.stdout, proc.stderr)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``ktrdr-daemon ARGS...`` left running (a daemon, a ``tail``, a ``wait``)."""
        return subprocess.Popen([*CLI, *args], cwd=self.home, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**self.env, **(env or {})}, start_new_session=True)

    def write(self, name: str, text: str) -> Path:
        """A file the user writes in their folder (a strategy, a job)."""
        path = self.home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    @staticmethod
    def interrupt(proc: subprocess.Popen[str], timeout: float = 30) -> Said:
        """Ctrl-C: SIGINT to the command's process group, then what it printed."""
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
        return Said(proc.returncode, out, err)

    def wait_for(self, predicate, timeout: float = 120, every: float = 0.2) -> None:
        """Poll ``predicate()`` until it is true, as a user re-running ``ls`` would."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not true after {timeout} s: {predicate}")
            time.sleep(every)
