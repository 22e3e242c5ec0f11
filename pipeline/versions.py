"""The model store's folders without torch: version numbers, the ``{tf}_latest`` link, listing
the versions with their JSON documents, and taking a version out of the store.

:class:`pipeline.store.ModelStore` publishes, lists and deletes through these; the daemon, which
never imports torch, withdraws a version a cancelled job left (ktrdr_daemon.publication) through
the same code, so both keep one rule for what "latest" points at; ``ktrdr-daemon models`` lists
(a listing that imported torch paid 2 s of CPU for a few JSON files).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGING = ".staging"
_VERSION = re.compile(r"^(.+)_v\d+$")
_NUMBERED = re.compile(r"^(.+)_v(\d+)$")
_NAME_MAX = 100


def sanitize_name(name: str) -> str:
    """Make ``name`` safe as one folder name: letters, digits, ``_ - .``; never ``.``-led (the
    store's folder of a strategy is its sanitized name)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip())[:_NAME_MAX]
    return re.sub(r"^\.", "_", clean)


@dataclass
class VersionInfo:
    """One complete version as :func:`list_versions` lists it."""

    strategy: str
    timeframe: str
    version: int
    path: Path
    metrics: dict
    created_at: str | None
    metadata: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The version's folder name, ``{timeframe}_v{N}``."""
        return f"{self.timeframe}_v{self.version}"

    @property
    def headline(self) -> dict[str, Any]:
        """Test metrics as we write them, else as KTRDR's host path does (top level), and the
        best validation accuracy KTRDR's own listing shows."""
        test = self.metrics.get("test") or {}
        summary = self.metadata.get("training_summary") or {}
        return {
            "test_accuracy": test.get("test_accuracy", self.metrics.get("test_accuracy")),
            "f1": test.get("f1", self.metrics.get("f1_score")),
            "precision": test.get("precision", self.metrics.get("precision")),
            "recall": test.get("recall", self.metrics.get("recall")),
            "best_val_accuracy": self.metrics.get(
                "best_val_accuracy", summary.get("best_val_accuracy")),
            # What always guessing the commonest class (sign) scores: the bar to clear.
            "baseline_accuracy": test.get("baseline_accuracy"),
            **({"directional_accuracy": test.get("directional_accuracy"), "mae": test["mae"],
                "baseline_direction": test.get("baseline_direction")}
               if test.get("output_format") == "regression" else {}),
        }

    @property
    def provenance(self) -> dict[str, Any]:
        """How it was trained, from what its writer recorded (None where a writer, KTRDR's for
        one, did not): the job and attempt, seed, device, date range and epochs."""
        meta, metrics = self.metadata, self.metrics
        training = metrics.get("training") or {}
        summary = meta.get("training_summary") or {}
        config = training.get("config") or {}
        # The date range the job asked for; where it took all the data (no range), the bars
        # it saw: the first train bar and the last test bar, where recorded.
        splits = metrics.get("splits") or {}
        first = (splits.get("train") or {}).get("first")
        last = (splits.get("test") or {}).get("last")
        return {
            "job_id": meta.get("job_id"), "attempt": meta.get("attempt"),
            "seed": meta.get("seed"), "device": meta.get("device"),
            "start_date": metrics.get("start_date") or (str(first)[:10] if first else None),
            "end_date": metrics.get("end_date") or (str(last)[:10] if last else None),
            "epochs_run": training.get("epochs_run", summary.get("epochs")),
            "epochs": config.get("epochs") if isinstance(config, dict) else None,
        }


def _read_json(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def list_versions(root: Path, strategy: str | None = None) -> list[VersionInfo]:
    """Every published version under the store ``root`` (staging is never listed), sorted by
    strategy, timeframe, N; a version whose JSON cannot be read (being deleted) is skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    strategies = ([strategy] if strategy else sorted(
        e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")))
    found: list[VersionInfo] = []
    for name in strategies:
        parent = root / name
        if not parent.is_dir():
            continue
        for entry in sorted(os.scandir(parent), key=lambda e: e.name):
            match = _NUMBERED.match(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False):
                continue
            folder = Path(entry.path)
            try:
                metrics = _read_json(folder / "metrics.json")
                metadata = _read_json(folder / "metadata.json")
            except (OSError, ValueError):
                continue  # being deleted right now
            found.append(VersionInfo(name, match.group(1), int(match.group(2)), folder,
                                     metrics, metadata.get("created_at"), metadata))
    found.sort(key=lambda v: (v.strategy, v.timeframe, v.version))
    return found


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable; not possible on every OS."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def version_numbers(parent: Path, timeframe: str) -> list[int]:
    """N of every ``{timeframe}_v{N}`` folder under a strategy's folder."""
    pattern = re.compile(rf"^{re.escape(timeframe)}_v(\d+)$")
    if not parent.is_dir():
        return []
    found = []
    for entry in os.scandir(parent):
        match = pattern.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            found.append(int(match.group(1)))
    return found


def point_latest(parent: Path, timeframe: str) -> None:
    """Point ``{tf}_latest`` at the highest version, atomically (none left: no link).

    Concurrent writers may each compute "highest" before the other publishes, so after
    each replace we look again: a writer that just installed a stale target sees a higher
    version and repeats, so the last replace of every writer names the true highest.
    """
    link = parent / f"{timeframe}_latest"
    while True:
        numbers = version_numbers(parent, timeframe)
        if not numbers:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            fsync_dir(parent)
            return
        top = max(numbers)
        temp = parent / f".{timeframe}_latest.{os.getpid()}.{uuid.uuid4().hex}"
        os.symlink(f"{timeframe}_v{top}", temp)  # relative: the store can be moved
        os.replace(temp, link)
        fsync_dir(parent)
        if max(version_numbers(parent, timeframe), default=0) == top:
            return


def take_out(folder: Path, holder: str) -> bool:
    """Remove the version ``folder`` (``{root}/{strategy}/{tf}_v{N}``): one rename takes it out
    of sight into ``{root}/.staging/{holder}/version``, ``{tf}_latest`` is pointed at the
    highest version left, then the files go. False when it was gone already (another remover
    won). One level below ``.staging/{holder}``, as the store stages: KTRDR's ``list_models``
    takes every ``{root}/*/*`` folder holding a metadata.json for a version, ``.staging/*``
    included."""
    match = _VERSION.match(folder.name)
    if match is None:
        raise ValueError(f"{folder} is not a version folder")
    trash = folder.parent.parent / STAGING / holder
    trash.mkdir(parents=True)
    try:
        os.rename(folder, trash / "version")
    except FileNotFoundError:
        trash.rmdir()
        return False
    fsync_dir(folder.parent)
    point_latest(folder.parent, match.group(1))
    shutil.rmtree(trash, ignore_errors=True)
    return True
