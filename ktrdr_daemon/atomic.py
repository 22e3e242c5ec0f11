"""One atomic write and one bounded reader for every file of the spool (spec 3.9).

Every publish is: write to ``tmp/``, flush and fsync, rename or link into place, fsync the
folder. Readers never follow a symlink or open a FIFO a user left, and never read more than
they asked for.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Only disk I/O fsyncs; tests may turn it off to go faster (never in a daemon).
FSYNC = True


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable (some filesystems cannot: that is fine)."""
    if not FSYNC:
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _write_temp(tmp_dir: Path, name: str, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to a fresh private file in ``tmp_dir`` (same filesystem), flushed to disk."""
    temp = tmp_dir / f"{name}.{os.getpid()}.{secrets.token_hex(6)}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        # tmp/ was removed under us (by hand, or a too eager cleanup): the folders the protocol
        # needs are re-created where they are missing, never a reason to stop publishing.
        tmp_dir.mkdir(exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if FSYNC and durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temp


def atomic_write(tmp_dir: Path, path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never half.

    ``durable=False`` keeps the atomic rename but skips both fsyncs: for heartbeats, which
    mean nothing after a power cut (their writer died too) and are rewritten every 2 s.
    """
    temp = _write_temp(tmp_dir, path.name, data, durable)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def publish_exclusive(tmp_dir: Path, path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist: exactly one writer gets True.

    ``link()`` never replaces, and it is atomic on NFS where ``O_EXCL`` was not always. NFS may
    report an error for a link that did happen (a lost reply), so the link count decides.
    """
    temp = _write_temp(tmp_dir, path.name, data)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError:
            if os.stat(temp).st_nlink != 2:
                raise
        fsync_dir(path.parent)
        return True
    finally:
        temp.unlink(missing_ok=True)


def _renameat2() -> Callable[..., int] | None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    return function


_RENAMEAT2 = _renameat2()
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def drop_exclusive(tmp_dir: Path, path: Path, data: bytes) -> bool:
    """Publish a drop into ``incoming/`` only if its name is free; True when it is ours.

    A rename that does not replace (Linux ``renameat2``) is what the daemon's watcher knows
    complete at once; where there is none, a ``link()`` (then the settle rule applies)."""
    if _RENAMEAT2 is None:
        return publish_exclusive(tmp_dir, path, data)
    import ctypes

    temp = _write_temp(tmp_dir, path.name, data)
    try:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(temp), _AT_FDCWD, os.fsencode(path),
                      _RENAME_NOREPLACE) == 0:
            fsync_dir(path.parent)
            return True
        error = ctypes.get_errno()
        if error == errno.EEXIST:
            return False
    finally:
        temp.unlink(missing_ok=True)
    return publish_exclusive(tmp_dir, path, data)  # EINVAL, ENOSYS: no such rename here


def json_bytes(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode()


def read_bounded(path: Path, limit: int) -> bytes:
    """Read at most ``limit`` bytes of a regular file, never following a symlink or a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json(path: Path, limit: int = 1 << 16) -> dict[str, Any] | None:
    """A small JSON record, or None when missing or unreadable (a reader must not crash on it)."""
    try:
        value = json.loads(read_bounded(path, limit))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
