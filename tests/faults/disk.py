"""A full disk under the spool and the model store.

Both live on one small tmpfs (``mount -t tmpfs -o size=32m``; it needs root, else the scenario is
skipped with the reason). For each point (a checkpoint write, model saving, result writing) a
job is run until it reaches that point, then the disk is filled to the last byte by a filler
file, held full for a moment, and freed. Promises:

- the job ends exactly once, or is retried: whatever state it ends in, nothing partial is
  visible (every version folder is whole, a completed job's version is its ``model_path``);
- the daemon keeps running through it;
- once space is free again, a following job completes.

    python -m tests.faults.disk --rounds 10
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import Daemon, Site, check_job, check_store, job_text, wait_point

POINTS = ("checkpoint", "publish", "result")
SIZE = "32m"  # room for the versions and logs of 30+ rounds; the filler takes the rest


def mount_small(folder: Path) -> str | None:
    """Mount a small tmpfs on ``folder``; None, or why it cannot be done here."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not root: cannot mount a small filesystem"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
    return None


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem refuses another byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 14, 1 << 10, 64, 1):
            while True:
                try:
                    handle.write(b"\0" * size)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    return filler


class DiskScenario:
    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.site = Site(mount.parent / "site", spool=mount / "spool", models=mount / "models")
        self.daemon = Daemon(self.site, "disk")
        self.violations: list[str] = []
        self.rounds: list[dict[str, Any]] = []

    def start(self) -> None:
        self.daemon.start()
        if not self.daemon.wait_ready():
            raise RuntimeError("the daemon did not start:\n" + self.daemon.log_text())

    def round(self, n: int, rng: random.Random) -> None:
        point = POINTS[n % len(POINTS)]
        target, after = f"full{n}-{point}", f"after{n}"
        self.site.drop(f"{target}.yaml", job_text(rng.randint(3, 5), max_attempts=3))
        landed = wait_point(self.site, target, point, 120)
        filler = fill(self.mount)
        time.sleep(rng.uniform(0.3, 2.0))
        filler.unlink()
        outcome = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.site.result(target) is None:
            time.sleep(0.05)
        outcome = check_job(self.site, target, max_attempts=3)
        bad = [f"{target}: {v}" for v in outcome.violations] + check_store(self.site)
        if not self.daemon.alive():
            bad.append(f"the daemon died on a full disk:\n{self.daemon.log_text()[-2000:]}")
            self.daemon.start()
            self.daemon.wait_ready()
        self.site.drop(f"{after}.yaml", job_text(2))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.site.result(after) is None:
            time.sleep(0.05)
        following = self.site.result(after) or {}
        if following.get("state") != "completed":
            bad.append(f"the job after the full disk did not complete: {following}")
        self.rounds.append({"round": n, "point": point, "landed": landed,
                            "state": outcome.state, "attempts": outcome.attempts,
                            "error": ((self.site.result(target) or {}).get("error") or {})
                            .get("message", "")[:120], "violations": bad})
        self.violations += bad

    def stop(self) -> None:
        if self.daemon.alive():
            self.daemon.send(15)
            self.daemon.wait_exit(15)
        self.daemon.kill_group()


def run(rounds: int, root: Path, seed: int = 1) -> tuple[list[dict[str, Any]], list[str]]:
    """(one record per round, violations); raises ``RuntimeError`` when no mount is possible."""
    mount = root / "small"
    why = mount_small(mount)
    if why:
        raise RuntimeError(why)
    scenario = DiskScenario(mount)
    try:
        scenario.start()
        rng = random.Random(seed)
        for n in range(rounds):
            scenario.round(n, rng)
    finally:
        scenario.stop()
        with contextlib.suppress(OSError):
            unmount(mount)
    return scenario.rounds, scenario.violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.disk",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ktrdr-disk-"))
    try:
        rounds, bad = run(args.rounds, root, args.seed)
    except RuntimeError as error:
        print(f"skipped: {error}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for record in rounds:
        print(json.dumps(record))
    print(f"{len(rounds)} rounds, {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
