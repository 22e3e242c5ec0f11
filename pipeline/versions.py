"""The model store's folders without torch: version numbers, the ``{tf}_latest`` link, and
taking a version out of the store.

:class:`pipeline.store.ModelStore` publishes and deletes through these; the daemon, which never
imports torch, withdraws a version a cancelled job left (ktrdr_daemon.publication) through the
same code, so both keep one rule for what "latest" points at.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path

STAGING = ".staging"
_VERSION = re.compile(r"^(.+)_v\d+$")


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
