"""The spool protocol: a job's state is which files exist (docs: spool spec, sections 1-3, 5-6).

Every transition below is one exclusive mkdir, rename or link, with its guarantee beside it, so a
daemon that dies anywhere leaves nothing to repair: the next rescan by any daemon carries on.

    incoming/<name>.yaml --rename--> jobs/<id>/submitted.yaml      (the rename is the arbiter)
    jobs/<id>/job.yaml               link, first writer wins         -> queued
    jobs/<id>/attempts/<n>.claim     link of a private record        -> running (attempt n)
    jobs/<id>/attempts/<n>.beat      replaced every H s (a counter)  liveness, judged by readers
    jobs/<id>/attempts/<n>.end       link, first writer wins         attempt n over: dead, handed
                                                                     back or abandoned
    jobs/<id>/result.json            link, first writer wins         -> completed|failed|cancelled
    jobs/<id>/attempts/retry.<n>.<k>.json                            retry: result archived, the
                                                                     attempt budget restarts at n

One rescan of a daemon, all of it safe to run in several daemons at once:

    incoming.complete_drops() -> accept_drop(spool, path, validate)     new jobs
    folders = scan_jobs(spool)                         one listing, shared by the passes below
    incoming.recover_unaccepted(validate)              drops a crashed daemon left half-way
    find_reclaimable(spool, judge) -> reclaim(...)     attempts whose owner is dead
    queued_jobs_in_order(spool) -> try_claim(...)      the next job (also ends cancelled ones
                                                       and those past max_attempts)
    claim.beat() every HEARTBEAT_S while it runs; write_result(spool, id, state, claim) at the end

Nothing here trusts a clock of another host: liveness is a counter that must keep changing as
seen on the reader's own monotonic clock. Files from the spool are data: YAML through the safe
loader only, JSON through ``json``; a job id never forms a path outside ``jobs/``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline import safe_yaml
from pipeline.job import EXECUTION_DEFAULTS, parse_execution

try:  # psutil is optional: /proc answers the same questions on Linux
    import psutil
except ImportError:  # pragma: no cover - depends on the installation
    psutil = None

State = Literal["queued", "running", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

HEARTBEAT_S = 2.0  # an owner rewrites its counter this often (spec 3.2)
T_EXPIRE_S = 30.0  # a counter unchanged this long on the reader's clock is a dead owner (3.3)
T_FENCE_S = 15.0  # an owner that could not beat this long stops and publishes nothing (3.4)
# A drop not renamed in is complete once unchanged (inode, size, mtime) this long: a plain copy
# or an `echo >>` sequence with short pauses passes; closing a file proves nothing (section 2).
DROP_SETTLE_S = 1.0
# A stem folder without its drop is taken for another daemon's acceptance in flight this long:
# mkdir then rename is microseconds, but a starved process may sit between them for a second.
ACCEPT_RACE_S = 2.0
ORPHAN_GRACE_S = 10.0  # a moved drop left unvalidated this long was a crashed acceptance
TMP_STALE_S = 3600.0  # a file left in tmp/ this long belongs to a writer that died
MAX_DROP_BYTES = 1 << 20  # 1 MiB (section 2)
MAX_YAML_NODES = 100_000  # values after alias expansion: stops "billion laughs"
MAX_YAML_DEPTH = 64
DEFAULT_MAX_ATTEMPTS = EXECUTION_DEFAULTS["max_attempts"]

SUBMITTED, JOB, RESULT, CANCEL = "submitted.yaml", "job.yaml", "result.json", "cancel"
IGNORED_SUFFIXES = (".tmp", ".part", ".swp", "~")
DROP_SUFFIXES = (".yaml", ".yml")
# The spec's [A-Za-z0-9_.-]{1,64}, less a leading "." (hidden) or "-" (read as a CLI option).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_ATTEMPT_FILE = re.compile(r"(\d{1,9})\.(claim|beat|end|publish)")
_RETRY_FILE = re.compile(r"retry\.(\d{1,9})\.(\d{1,9})\.json")

#: ``validate(mapping, filename) -> (normalized mapping, warnings)``; raises with a message
#: for the user. It sees the job without the spool's own keys (``priority``, ``execution``).
Validate = Callable[[dict[str, Any], str], tuple[dict[str, Any], list[str]]]

# Only disk I/O fsyncs; tests may turn it off to go faster (never in a daemon).
FSYNC = True


def utc_now() -> str:
    """UTC ISO 8601 with microseconds and ``Z``: sorts as text, so FIFO order is string order."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def is_safe_name(name: str) -> bool:
    """A job or daemon id: ``[A-Za-z0-9_.-]{1,64}`` not starting with ``.`` or ``-``; as one
    path component without ``/`` or a leading dot it can never leave its folder."""
    return bool(_SAFE_NAME.fullmatch(name))


# --- 1. Layout -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spool:
    """A spool folder. Cheap to build; :meth:`ensure_layout` creates the folders once."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def daemons(self) -> Path:
        return self.root / "daemons"

    def ensure_layout(self) -> None:
        """Create the four folders; idempotent, safe for several daemons at once."""
        for folder in (self.incoming, self.tmp, self.jobs, self.daemons):
            folder.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        """``jobs/<job_id>``, refusing any id that could name something else (``..``, ``/``)."""
        if not is_safe_name(job_id):
            raise ValueError(f"not a job id: {job_id!r} (allowed: [A-Za-z0-9_.-]{{1,64}})")
        return self.jobs / job_id

    def attempts_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "attempts"


# --- 3.9 Publishing: tmp/, fsync, rename or link, fsync the folder ---------------------------


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


def _drop_exclusive(spool: Spool, path: Path, data: bytes) -> bool:
    """Publish a drop into ``incoming/`` only if its name is free; True when it is ours.

    A rename that does not replace (Linux ``renameat2``) is what the daemon's watcher knows
    complete at once; where there is none, a ``link()`` (then the settle rule applies)."""
    if _RENAMEAT2 is None:
        return publish_exclusive(spool.tmp, path, data)
    import ctypes

    temp = _write_temp(spool.tmp, path.name, data)
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
    return publish_exclusive(spool.tmp, path, data)  # EINVAL, ENOSYS: no such rename here


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode()


def _read_bounded(path: Path, limit: int) -> bytes:
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


def _read_json(path: Path, limit: int = 1 << 16) -> dict[str, Any] | None:
    """A small JSON record, or None when missing or unreadable (a reader must not crash on it)."""
    try:
        value = json.loads(_read_bounded(path, limit))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- 2. Reading what users drop: untrusted YAML ------------------------------------------------


class JobFileError(ValueError):
    """A dropped file is not an acceptable job. The message names the file, key and allowed."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source, self.errors = source, list(errors)
        if len(errors) == 1:
            super().__init__(f"{source}: {errors[0]}")
        else:
            super().__init__(f"{source}: {len(errors)} errors\n  " + "\n  ".join(errors))


_Loader = safe_yaml.LOADER


def _check_expansion(root: yaml.Node) -> None:
    """Refuse alias bombs and recursive aliases before constructing anything.

    The composer shares an aliased node; counting the tree as if aliases were expanded (memoised,
    iteratively) costs one visit per node however large the expansion would be.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    while stack:
        node, depth, done = stack.pop()
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children(node))
            if sizes[id(node)] > MAX_YAML_NODES:
                raise ValueError(
                    f"aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?); "
                    "write the values out or use fewer aliases"
                )
            continue
        if id(node) in sizes:
            continue
        if depth > MAX_YAML_DEPTH:
            raise ValueError(f"nested deeper than {MAX_YAML_DEPTH} levels")
        on_path.add(id(node))
        stack.append((node, depth, True))
        for child in children(node):
            if id(child) in on_path:
                raise ValueError("an alias refers to its own parent (a recursive structure)")
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def load_job_mapping(data: bytes, source: str) -> dict[str, Any]:
    """Parse a dropped file into a mapping, or raise :class:`JobFileError` saying what is wrong."""
    if len(data) > MAX_DROP_BYTES:
        raise JobFileError(source, [f"is over {MAX_DROP_BYTES // 1024} KiB; a job file is small"])
    if not data.strip():
        raise JobFileError(source, ["is empty; expected a mapping such as 'strategy: x.yaml'"])
    if b"\x00" in data:
        raise JobFileError(source, ["is binary (NUL bytes); expected a YAML text file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JobFileError(source, [f"is not UTF-8 text (byte {error.start})"]) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        doc = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise JobFileError(source, [f"is not valid YAML: {problem}{where}"]) from None
    except (ValueError, RecursionError) as error:
        message = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise JobFileError(source, [f"is refused: {message}"]) from None
    finally:
        loader.dispose()
    if not isinstance(doc, dict):
        kind = "nothing" if doc is None else type(doc).__name__
        raise JobFileError(source, [f"holds {kind}; expected a mapping of keys to values"])
    return doc


def _spool_keys(doc: dict[str, Any], source: str) -> tuple[int, dict[str, Any]]:
    """Check and fill the keys the spool itself acts on: ``priority`` and ``execution``
    (parsed by :func:`pipeline.job.parse_execution`, the one parser of these keys)."""
    errors: list[str] = []
    execution, priority = parse_execution(doc, errors)
    if errors:
        raise JobFileError(source, errors)
    return priority, execution


def wants_gpu(execution: dict[str, Any]) -> str | None:
    """Why a job must run on a GPU (``mode is gpu`` or ``require_gpu is set``), or None: the one
    rule that ``submit`` checks before dropping and a CPU daemon before failing the job fast."""
    if execution.get("mode") in ("gpu", "host"):
        return "mode is gpu"
    if execution.get("require_gpu") is True:
        return "require_gpu is set"
    return None


def parse_drop(data: bytes, source: str) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """A dropped file's (body, priority, execution): what ``submit`` checks before dropping it
    and what acceptance checks after. Raises :class:`JobFileError`."""
    doc = load_job_mapping(data, source)
    priority, execution = _spool_keys(doc, source)
    return {k: v for k, v in doc.items() if k not in ("priority", "execution")}, priority, execution


# --- 2. Accepting drops ----------------------------------------------------------------------


def is_ignored_name(name: str) -> bool:
    """Names still being written by editors and copy tools are left alone until renamed."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


class Incoming:
    """``incoming/`` as one daemon sees it, remembering what it saw to tell complete drops.

    Rule: a drop is complete when it was renamed in (the watcher's move event, handed to
    :func:`accept_drop` directly) or when its inode, size and mtime are unchanged between two
    looks at least :data:`DROP_SETTLE_S` apart on this process's clock; a plain copy is taken
    once it stops growing. A writer that pauses longer than that may be taken early (then it
    most likely fails validation, visibly, rather than vanishing). Every entry counts,
    whatever its type (a FIFO, a socket, a directory named ``x.yaml``): each gets an outcome.
    """

    def __init__(
        self, spool: Spool, settle: float = DROP_SETTLE_S, grace: float = ORPHAN_GRACE_S
    ) -> None:
        self.spool, self.settle, self.grace = spool, settle, grace
        self._seen: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._orphans: dict[str, float] = {}

    def _look(self) -> tuple[list[tuple[float, Path]], float | None]:
        now, ready, soonest, present = time.monotonic(), [], None, set()
        try:
            entries = list(os.scandir(self.spool.incoming))
        except FileNotFoundError:
            return [], None
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # taken by another daemon since the listing
            if stat.S_ISDIR(st.st_mode) and not entry.name.lower().endswith(DROP_SUFFIXES):
                continue  # a folder of the user's (a staging area): only x.yaml/ is a drop
            present.add(entry.name)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            seen = self._seen.get(entry.name)
            if seen is None or seen[0] != signature:
                self._seen[entry.name] = (signature, now)
                left = self.settle
            else:
                left = self.settle - (now - seen[1])
            if left <= 0:
                ready.append((self._seen[entry.name][1], Path(entry.path)))
            else:
                soonest = left if soonest is None else min(soonest, left)
        for name in set(self._seen) - present:
            del self._seen[name]
        return ready, soonest

    def complete_drops(self, wait: bool = True) -> list[Path]:
        """Drops ready to accept, in the order they arrived. With ``wait``, a drop seen for the
        first time is looked at again after the settle time, so a renamed file is taken in
        ~0.1 s; without it the next call (the next rescan or event) takes it."""
        ready, soonest = self._look()
        if wait and soonest is not None:
            time.sleep(soonest)
            ready, _ = self._look()
        return [path for _, path in sorted(ready)]

    def recover_unaccepted(
        self, validate: Validate | None = None, folders: list[JobFolder] | None = None
    ) -> list[str]:
        """Finish jobs a crashed daemon moved in but never validated (call it every rescan).

        A folder holding only ``submitted.yaml`` is left alone until this daemon has seen it so
        for ``grace`` seconds of its own clock: until then it is most likely another daemon's
        acceptance in progress, and validating it twice would only waste time.
        """
        done, orphans = [], set()
        now = time.monotonic()
        for folder in scan_jobs(self.spool) if folders is None else folders:
            names = folder.names
            if SUBMITTED not in names or JOB in names or RESULT in names:
                continue
            orphans.add(folder.id)
            if now - self._orphans.setdefault(folder.id, now) >= self.grace:
                finish_accept(self.spool, folder.id, validate)
                done.append(folder.id)
        self._orphans = {k: v for k, v in self._orphans.items() if k in orphans}
        return done


def _id_candidates(stem: str) -> Iterator[str]:
    """The stem itself when safe, then the (sanitised) stem with a short random suffix."""
    if is_safe_name(stem):
        yield stem
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip(".-")[:56] or "job"  # 56 + 7 <= 64
    while True:
        yield f"{base}-{secrets.token_hex(3)}"


def _drop_stem(name: str) -> str:
    lower = name.lower()
    for suffix in DROP_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _make_job_dir(spool: Spool, drop: Path) -> str | None:
    """Create ``jobs/<id>/`` exclusively; None when the drop vanished (another daemon has it).

    The stem is taken when unused. A stem folder without ``submitted.yaml`` is most likely
    another daemon half-way through accepting this very drop: give it a moment, so that two
    daemons racing over one drop do not hand it a suffixed id.
    """
    stem = _drop_stem(drop.name)
    for job_id in _id_candidates(stem):
        if not os.path.lexists(drop):
            return None  # a stale listing: another daemon has accepted it already
        try:
            os.mkdir(spool.jobs / job_id)
            return job_id
        except FileExistsError:
            if job_id == stem and not os.path.lexists(spool.jobs / stem / SUBMITTED):
                deadline = time.monotonic() + ACCEPT_RACE_S
                while time.monotonic() < deadline:
                    if not os.path.lexists(drop):
                        return None
                    if os.path.lexists(spool.jobs / stem / SUBMITTED):
                        break  # another drop with the same stem has it: take a suffix
                    time.sleep(0.002)
    raise AssertionError("unreachable")  # pragma: no cover


def accept_drop(spool: Spool, drop: Path, validate: Validate | None = None) -> str | None:
    """Turn a complete drop into a job; returns its id, or None when another daemon took it.

    1. mkdir ``jobs/<id>`` exclusively (a crash here leaves an empty folder, the drop stays).
    2. rename the drop to ``jobs/<id>/submitted.yaml``: of several daemons exactly one rename
       succeeds; the losers remove their empty folder. Bytes are untouched.
    3. :func:`finish_accept` writes ``job.yaml`` or a failed ``result.json``. A crash before
       that leaves a folder with only ``submitted.yaml``, which
       :meth:`Incoming.recover_unaccepted` finishes.
    """
    while True:
        job_id = _make_job_dir(spool, drop)
        if job_id is None:
            return None
        job_dir = spool.jobs / job_id
        try:
            os.rename(drop, job_dir / SUBMITTED)
            break
        except FileNotFoundError:
            if os.path.lexists(drop):
                continue  # our fresh, empty folder was removed (clean): make another
            with contextlib.suppress(OSError):
                os.rmdir(job_dir)
            return None
    fsync_dir(job_dir)
    fsync_dir(spool.incoming)
    _own_copy(spool, job_dir / SUBMITTED)
    if not drop.name.lower().endswith(DROP_SUFFIXES):
        message = f"{drop.name}: only .yaml or .yml files are accepted; rename it and drop again"
        write_result(spool, job_id, "failed", error={"message": message, "where": "validation"})
    else:
        finish_accept(spool, job_id, validate, source=drop.name)
    return job_id


def _own_copy(spool: Spool, submitted: Path) -> None:
    """A hard-linked drop is the user's file under a second name: edits to it would keep
    changing the job. Replace it by a private copy of its bytes (the rename above already
    decided who accepts it)."""
    try:
        st = os.lstat(submitted)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            data = _read_bounded(submitted, MAX_DROP_BYTES + 1)
            atomic_write(spool.tmp, submitted, data)
    except OSError:
        pass  # unreadable: finish_accept says so in the job's failed result


def _file_kind(path: Path) -> str | None:
    """What a non-regular drop is, in words, or None for a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((word for test, word in kinds if test(mode)), None)


def finish_accept(
    spool: Spool, job_id: str, validate: Validate | None = None, source: str | None = None
) -> str:
    """Validate ``submitted.yaml`` into ``job.yaml``, or end the job failed; returns the state.

    Both outcomes are created exclusively, so two daemons finishing one job agree on one.
    """
    job_dir = spool.job_dir(job_id)
    source = source or f"jobs/{job_id}/{SUBMITTED}"
    try:
        if kind := _file_kind(job_dir / SUBMITTED):
            raise JobFileError(source, [f"is {kind}, not a regular file; drop the file itself"])
        try:
            data = _read_bounded(job_dir / SUBMITTED, MAX_DROP_BYTES + 1)
        except OSError as error:
            raise JobFileError(source, [f"cannot be read: {error.strerror}"]) from None
        body, priority, execution = parse_drop(data, source)
        body, warnings = validate(body, source) if validate else (body, [])
    except Exception as error:  # every drop gets an outcome, whatever the validator raised
        message = str(error) or type(error).__name__
        if source not in message:
            message = f"{source}: {message}"
        write_result(spool, job_id, "failed", error={"message": message, "where": "validation"})
        return "failed"
    job: dict[str, Any] = {
        "id": job_id,
        "submitted_at": utc_now(),
        "source": source,
        "priority": priority,
        "execution": execution,
        # This submission, unlike its name (reusable after `clean`): a model version records it.
        "submission": secrets.token_hex(8),
    }
    for key, value in body.items():
        if key in job:
            warnings.append(f"{source}: {key!r} is set by the spool; the file's value is ignored")
        else:
            job[key] = value
    if warnings:
        job["warnings"] = list(warnings)
    text = safe_yaml.dump(job)
    publish_exclusive(spool.tmp, job_dir / JOB, text.encode())
    return "queued"


def submit_drop(spool: Spool, data: bytes, filename: str) -> str:
    """Publish ``data`` into ``incoming/`` under a name whose stem is free; returns the job id
    the daemon will give it (the stem), for ``ktrdr-daemon submit`` to print."""
    for job_id in _id_candidates(_drop_stem(Path(filename).name)):
        if os.path.lexists(spool.jobs / job_id):
            continue
        if any(os.path.lexists(spool.incoming / (job_id + s)) for s in DROP_SUFFIXES):
            continue
        if _drop_exclusive(spool, spool.incoming / f"{job_id}.yaml", data):
            return job_id
    raise AssertionError("unreachable")  # pragma: no cover


# --- 1. Reading state: derived from which files exist ------------------------------------------


def _job_entries(spool: Spool) -> Iterator[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(spool.jobs))
    except FileNotFoundError:
        return
    for entry in entries:
        if is_safe_name(entry.name) and entry.is_dir(follow_symlinks=False):
            yield entry


def _names(folder: str | Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(folder)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


# A job folder's names (and the JobInfo they determine), cached by the folder's inode and mtime:
# a rescan over thousands of finished jobs costs one lstat per job, not a directory read. Every
# change that matters adds or removes a name in the folder (job.yaml, result.json, cancel,
# attempts/), which changes its mtime. As git does for racy index entries, a listing is kept
# only when the folder was LISTING_SETTLED_S old by our clock (a second change within the same
# timestamp tick would otherwise go unseen), and trusted at most LISTING_MAX_AGE_S (a file
# server's clock may lag ours); a finished job's listing, which only a retry changes, for
# FINISHED_LISTING_MAX_AGE_S.
LISTING_SETTLED_S = 1.0
LISTING_MAX_AGE_S = 30.0
FINISHED_LISTING_MAX_AGE_S = 600.0
_listing_cache: dict[str, tuple[tuple[int, int], float, frozenset[str], JobInfo | None]] = {}


def _job_listing(path: str) -> tuple[frozenset[str], JobInfo | None]:
    """(names, cached JobInfo or None) of the job folder at ``path``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return frozenset(), None
    key, now = (st.st_ino, st.st_mtime_ns), time.monotonic()
    cached = _listing_cache.get(path)
    if cached and cached[0] == key:
        max_age = FINISHED_LISTING_MAX_AGE_S if RESULT in cached[2] else LISTING_MAX_AGE_S
        if now - cached[1] < max_age:
            return cached[2], cached[3]
    names = frozenset(_names(path))  # listed after the stat: never older than its key
    if time.time() - st.st_mtime >= LISTING_SETTLED_S:
        _listing_cache[path] = (key, now, names, None)
    else:
        _listing_cache.pop(path, None)
    return names, None


def _remember_info(path: str, names: frozenset[str], info: JobInfo) -> None:
    """Keep ``info`` with the listing when names alone fix it: a finished job (its result is
    written once) or one never claimed (no attempts/, whose files change without the folder)."""
    cached = _listing_cache.get(path)
    if cached and cached[2] is names and (RESULT in names or "attempts" not in names):
        _listing_cache[path] = (*cached[:3], info)


@dataclass(frozen=True)
class JobFolder:
    """One folder of ``jobs/`` as one scan saw it: the names it held (and, when names alone
    fix it, the cached :class:`JobInfo`)."""

    id: str
    path: str
    names: frozenset[str]
    info: JobInfo | None


@dataclass
class _Scan:
    key: tuple[int, int]
    full_at: float
    folders: list[JobFolder]


_last_scans: dict[str, _Scan] = {}


def scan_jobs(spool: Spool) -> list[JobFolder]:
    """Every job folder, listed once; a daemon's rescan shares one scan between its passes.

    A finished job's folder changes only by ``retry`` (which touches ``jobs/``) or ``clean``
    (which removes it from ``jobs/``), and a new job adds a name to ``jobs/``: so while
    ``jobs/`` itself is unchanged (and settled, as above), only the unfinished folders are
    looked at again, and an idle daemon over 10,000 finished jobs costs one stat of ``jobs/``.
    A full scan still runs every LISTING_MAX_AGE_S, for changes made by hand.
    """
    try:
        st = os.stat(spool.jobs)
    except FileNotFoundError:
        return []
    key, now = (st.st_ino, st.st_mtime_ns), time.monotonic()
    last = _last_scans.get(str(spool.jobs))
    if (last is not None and last.key == key and now - last.full_at < LISTING_MAX_AGE_S
            and time.time() - st.st_mtime >= LISTING_SETTLED_S):
        folders = [f if RESULT in f.names else JobFolder(f.id, f.path, *_job_listing(f.path))
                   for f in last.folders]
        last.folders = folders
        return folders
    folders = [JobFolder(entry.name, entry.path, *_job_listing(entry.path))
               for entry in _job_entries(spool)]
    _last_scans[str(spool.jobs)] = _Scan(key, now, folders)
    if len(_listing_cache) > len(folders) + 1000:  # forget folders that were cleaned
        seen = {folder.path for folder in folders}
        for path in [p for p in _listing_cache if p not in seen]:
            del _listing_cache[path]
    return folders


@dataclass
class _Attempts:
    """What ``attempts/`` holds, from names alone (no reads): claims, ends, retry boundary."""

    claims: set[int] = field(default_factory=set)
    ends: set[int] = field(default_factory=set)
    publishes: set[int] = field(default_factory=set)  # attempts that may have published
    retries: list[tuple[int, int]] = field(default_factory=list)  # (first attempt, seq)

    @classmethod
    def scan(cls, folder: Path) -> _Attempts:
        found = cls()
        for name in _names(folder):
            if match := _ATTEMPT_FILE.fullmatch(name):
                n, kind = int(match[1]), match[2]
                if kind == "claim":
                    found.claims.add(n)
                elif kind == "end":
                    found.ends.add(n)
                elif kind == "publish":
                    found.publishes.add(n)
            elif match := _RETRY_FILE.fullmatch(name):
                found.retries.append((int(match[1]), int(match[2])))
        return found

    @property
    def last(self) -> int:
        return max(self.claims, default=0)

    @property
    def budget_start(self) -> int:
        """The first attempt counted against ``max_attempts`` (a retry starts a fresh budget)."""
        return max((first for first, _ in self.retries), default=1)

    @property
    def open_attempt(self) -> int | None:
        """The attempt holding the job now: the last claim, not ended, not before a retry."""
        n = self.last
        return n if n and n not in self.ends and n >= self.budget_start else None

    @property
    def next_attempt(self) -> int:
        return max(self.last + 1, self.budget_start)


_Cache = dict[str, tuple[tuple[int, int], dict[str, Any]]]
_job_cache: _Cache = {}
_header_cache: _Cache = {}
_SPOOL_KEYS = ("id", "submitted_at", "source", "priority", "execution")
_HEADER_KEYS = (*_SPOOL_KEYS, "submission")  # absent from older job.yaml files


def _cached(path: Path, cache: _Cache,
            parse: Callable[[Path], dict[str, Any] | None]) -> dict[str, Any] | None:
    """``parse(path)``, remembered by inode and mtime: ``job.yaml`` is created once, so a
    rescan pays one stat per job instead of a YAML parse. None when the file is missing."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    key = (st.st_ino, st.st_mtime_ns)
    cached = cache.get(str(path))
    if cached and cached[0] == key:
        return cached[1]
    value = parse(path)
    if value is not None:
        cache[str(path)] = (key, value)
    return value


def _parse_job(path: Path) -> dict[str, Any] | None:
    job = yaml.load(_read_bounded(path, MAX_DROP_BYTES * 2), Loader=_Loader)  # safe loader
    return job if isinstance(job, dict) else None


def read_job(spool: Spool, job_id: str) -> dict[str, Any] | None:
    """``job.yaml`` or None when not accepted yet."""
    return _cached(spool.job_dir(job_id) / JOB, _job_cache, _parse_job)


def read_job_header(spool: Spool, job_id: str) -> dict[str, Any] | None:
    """The spool's own keys of ``job.yaml`` (id, submitted_at, source, priority, execution),
    or None when not accepted yet. :func:`finish_accept` writes them first, so only those
    lines are parsed, not the resolved strategy below them (~50x less YAML: ``ls`` and a
    daemon's first rescan over 10,000 queued jobs). Any other layout: the whole file."""

    def parse(path: Path) -> dict[str, Any] | None:
        lines = []
        for line in _read_bounded(path, 1 << 13).split(b"\n")[:-1]:  # the last may be cut
            key = line.split(b":", 1)[0].decode(errors="replace")
            if not line.startswith(b" ") and key not in _HEADER_KEYS:
                break
            lines.append(line)
        try:
            header = yaml.load(b"\n".join(lines), Loader=_Loader)  # safe loader
        except yaml.YAMLError:
            header = None
        if isinstance(header, dict) and all(k in header for k in _SPOOL_KEYS):
            return header
        job = read_job(spool, job_id)
        return None if job is None else {k: job.get(k) for k in _HEADER_KEYS}

    return _cached(spool.job_dir(job_id) / JOB, _header_cache, parse)


def read_result(spool: Spool, job_id: str) -> dict[str, Any] | None:
    """``result.json``, or None when it does not exist. Its existence is what makes a job
    terminal (section 1), so an unreadable one (edited, torn by a disk) reads as failed,
    saying so, and ``retry`` requeues it like any failed job: every reader agrees."""
    return _result_at(spool.job_dir(job_id) / RESULT)


def _result_at(path: Path) -> dict[str, Any] | None:
    try:
        data = _read_bounded(path, 1 << 20)
    except FileNotFoundError:
        return None
    except OSError as error:
        problem = error.strerror or str(error)
    else:
        try:
            value = json.loads(data)
            if isinstance(value, dict) and value.get("state") in TERMINAL:
                return value
            problem = "not a result record"
        except ValueError as error:
            problem = f"not JSON ({error})"
    message = f"result.json is unreadable: {problem}; `ktrdr-daemon retry` requeues the job"
    return {"schema": 1, "state": "failed", "unreadable": True,
            "error": {"message": message, "where": "result"}}


@dataclass
class JobInfo:
    """One line of ``ktrdr-daemon ls``; built from names plus job.yaml (cached) and results."""

    id: str
    state: State
    accepted: bool
    priority: int = 0
    submitted_at: str = ""
    attempt: int = 0
    daemon: str | None = None
    cancel_requested: bool = False
    execution: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    broken: str | None = None  # job.yaml unreadable or edited into something invalid: why
    unsettled: bool = False  # an attempt may have published a version: see publication.py


def _job_info(spool: Spool, job_id: str, job_dir: Path, names: set[str]) -> JobInfo:
    """State per spec 1: ``result.json`` -> terminal; an open claim -> running; else queued."""
    job, broken = _header_or_problem(spool, job_id) if JOB in names else (None, None)
    attempts = _Attempts.scan(job_dir / "attempts") if "attempts" in names else _Attempts()
    info = JobInfo(job_id, "queued", job is not None, attempt=attempts.last, broken=broken)
    info.cancel_requested = CANCEL in names
    info.unsettled = bool(attempts.publishes)
    if job is not None and broken is None:
        info.priority = job["priority"]
        info.submitted_at = str(job.get("submitted_at", ""))
        info.execution = job["execution"]
    if RESULT in names:
        result = _result_at(job_dir / RESULT) or {}
        info.state = result.get("state", "failed")
        info.daemon = result.get("daemon")
        info.error = (result.get("error") or {}).get("message") if info.state == "failed" else None
    elif (n := attempts.open_attempt) is not None:
        info.state = "running"
        info.daemon = (_read_json(job_dir / "attempts" / f"{n}.claim") or {}).get("daemon")
    return info


def _header_or_problem(spool: Spool, job_id: str) -> tuple[dict[str, Any], str | None]:
    """job.yaml's spool keys, checked again by the one parser (job.yaml is a file: a hand edit
    or a torn write must end that job with a reason, never stop a daemon's loop)."""
    try:
        header = read_job_header(spool, job_id)
    except (OSError, ValueError, yaml.YAMLError) as error:
        return {}, f"jobs/{job_id}/{JOB} cannot be read: {str(error).splitlines()[0]}"
    if header is None:
        return {}, f"jobs/{job_id}/{JOB} is not a mapping"
    errors: list[str] = []
    execution, priority = parse_execution(header, errors)
    if errors:
        return header, f"jobs/{job_id}/{JOB} was edited into an invalid job: {'; '.join(errors)}"
    return {**header, "priority": priority, "execution": execution}, None


def job_info(spool: Spool, job_id: str) -> JobInfo:
    job_dir = spool.job_dir(job_id)
    return _job_info(spool, job_id, job_dir, _names(job_dir))


def job_state(spool: Spool, job_id: str) -> State:
    return job_info(spool, job_id).state


def list_jobs(spool: Spool, state: State | None = None,
              folders: list[JobFolder] | None = None) -> list[JobInfo]:
    """Jobs holding a drop (an empty folder is an acceptance in flight), optionally one state,
    from ``folders`` (one :func:`scan_jobs`) or a fresh scan.

    Terminal and live jobs are told apart by names first, so asking for the queue reads
    nothing of the thousands of finished jobs (10,000 jobs: well under a second).
    """
    infos = []
    for folder in scan_jobs(spool) if folders is None else folders:
        names, info = folder.names, folder.info
        if SUBMITTED not in names and RESULT not in names:
            continue
        if state is not None and (RESULT in names) != (state in TERMINAL):
            continue
        if info is None:
            info = _job_info(spool, folder.id, Path(folder.path), set(names))
            _remember_info(folder.path, names, info)
        if state is None or info.state == state:
            infos.append(info)
    return infos


def queued_jobs(spool: Spool, folders: list[JobFolder] | None = None) -> list[JobInfo]:
    """Accepted queued jobs: higher priority first, then FIFO by submit time, then id. Each
    carries its execution and cancel request, so a daemon reads nothing more per job."""
    queued = [j for j in list_jobs(spool, "queued", folders) if j.accepted]
    queued.sort(key=lambda j: (-j.priority, j.submitted_at, j.id))
    return queued


def queued_jobs_in_order(spool: Spool) -> list[str]:
    return [j.id for j in queued_jobs(spool)]


# --- 3. Who is alive: identities and the liveness judge ---------------------------------------


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) from /proc, or None when there is no such pid."""
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], fields[19]


def process_start_time(pid: int) -> str | None:
    """An opaque value that differs when a pid is reused, or None when it cannot be known."""
    if os.path.isdir("/proc/self"):
        found = _proc_stat(pid)
        return found[1] if found else None
    if psutil is not None:
        try:
            return repr(psutil.Process(pid).create_time())
        except psutil.Error:
            return None
    return None


def pid_is_alive(pid: int, start_time: str | None) -> bool:
    """False only when provably dead: no such pid, a zombie, or another process (start time)."""
    if os.path.isdir("/proc/self"):
        found = _proc_stat(pid)
        if found is None or found[0] in ("Z", "X"):
            return False
        return start_time is None or found[1] == start_time
    if psutil is not None:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return start_time is None or repr(process.create_time()) == start_time
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _boot_id() -> str | None:
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    if boot is None and psutil is not None:
        boot = f"boot-time:{psutil.boot_time()}"
    return boot


def _pid_namespace() -> str | None:
    """Containers on one host share the boot id but not pids: compare the namespace too."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None if os.path.isdir("/proc/self") else "host"


@dataclass(frozen=True)
class DaemonIdentity:
    """Who claims: enough to prove on the same host that the claimer is gone (spec 3.1)."""

    daemon_id: str
    host: str
    pid: int
    pid_start: str | None
    boot_id: str | None
    pid_ns: str | None

    @classmethod
    def current(cls, daemon_id: str) -> DaemonIdentity:
        if not is_safe_name(daemon_id):
            raise ValueError(f"not a daemon id: {daemon_id!r} (allowed: [A-Za-z0-9_.-]{{1,64}})")
        pid = os.getpid()
        return cls(
            daemon_id,
            socket.gethostname(),
            pid,
            process_start_time(pid),
            _boot_id(),
            _pid_namespace(),
        )

    def record(self) -> dict[str, Any]:
        return {
            "daemon": self.daemon_id,
            "host": self.host,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "boot_id": self.boot_id,
            "pid_ns": self.pid_ns,
        }


class LivenessJudge:
    """One per daemon: says whether the owner of a claim or heartbeat is dead (spec 3.3).

    Dead at once: same host (boot id, pid namespace and host name equal) and its pid is gone or
    now another process. Dead later: its counter stayed the same for ``t_expire`` seconds of
    this process's monotonic clock. A judge that has just started has no history, so everything
    it sees for the first time is alive until silent for ``t_expire``.
    """

    def __init__(self, me: DaemonIdentity, t_expire: float = T_EXPIRE_S) -> None:
        self.me, self.t_expire = me, t_expire
        self._seen: dict[str, tuple[Any, float]] = {}

    def same_host(self, record: dict[str, Any]) -> bool:
        me = self.me
        return (
            me.boot_id is not None
            and me.pid_ns is not None
            and record.get("boot_id") == me.boot_id
            and record.get("pid_ns") == me.pid_ns
            and record.get("host") == me.host
        )

    def death(self, key: str, record: dict[str, Any], counter: Any) -> str | None:
        """The reason the owner is dead, or None while it may be alive."""
        pid = record.get("pid")
        same_host = self.same_host(record) and isinstance(pid, int)
        if same_host and not pid_is_alive(pid, record.get("pid_start")):
            return f"process {pid} on {record.get('host')} is gone"
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != counter:
            self._seen[key] = (counter, now)
            return None
        if now - seen[1] >= self.t_expire:
            return f"no heartbeat for {now - seen[1]:.1f} s"
        return None

    def silent_for(self, key: str) -> float:
        seen = self._seen.get(key)
        return 0.0 if seen is None else time.monotonic() - seen[1]

    def keep_only(self, prefix: str, keys: set[str]) -> None:
        """Forget owners under ``prefix`` no longer watched, so a long-lived daemon stays small."""
        for key in [k for k in self._seen if k.startswith(prefix) and k not in keys]:
            del self._seen[key]


# --- 3. Claims: exclusive creation, heartbeats, self-fencing --------------------------------


class Claim:
    """Our hold on attempt ``n`` of a job, and the one object allowed to publish for it.

    Fencing: the claim is ours only while our heartbeat never went ``t_fence`` without a
    successful write (sticky: after such a gap a reclaim may be under way, so we never resume),
    ``attempts/<n>.claim`` still holds our record, nobody ended attempt n, and no result exists.
    """

    def __init__(
        self, spool: Spool, job_id: str, attempt: int, data: bytes, t_fence: float = T_FENCE_S
    ) -> None:
        self.spool, self.job_id, self.attempt, self.t_fence = spool, job_id, attempt, t_fence
        self.record: dict[str, Any] = json.loads(data)
        self._data = data
        self._counter = 0
        self._last_ok = time.monotonic()
        self._fenced = False

    @property
    def attempts(self) -> Path:
        return self.spool.attempts_dir(self.job_id)

    @property
    def path(self) -> Path:
        return self.attempts / f"{self.attempt}.claim"

    def _fence_expired(self) -> bool:
        if time.monotonic() - self._last_ok >= self.t_fence:
            self._fenced = True
        return self._fenced

    def beat(self) -> bool:
        """Bump our counter (every :data:`HEARTBEAT_S`); False means stop the job now."""
        if self._fence_expired():
            return False
        self._counter += 1
        try:
            beat_file = self.attempts / f"{self.attempt}.beat"
            atomic_write(self.spool.tmp, beat_file, b"%d\n" % self._counter, durable=False)
            self._last_ok = time.monotonic()
        except OSError:
            pass  # a flaky share: keep trying until t_fence says otherwise
        return self.still_owner()

    def still_owner(self) -> bool:
        """True while this attempt is the job's current one (cancelled or not)."""
        if self._fence_expired():
            return False
        job_dir = self.spool.job_dir(self.job_id)
        lost = (
            os.path.lexists(job_dir / RESULT)
            or os.path.lexists(self.attempts / f"{self.attempt}.end")
            or os.path.lexists(self.attempts / f"{self.attempt + 1}.claim")
        )
        try:
            lost = lost or _read_bounded(self.path, 1 << 16) != self._data
        except OSError:
            lost = True
        if lost:
            self._fenced = True
        return not lost

    def still_current(self) -> bool:
        """True when we may publish a model: still the owner and the job is not cancelled."""
        return self.still_owner() and not is_cancel_requested(self.spool, self.job_id)

    def _end(self, reason: str, counts: bool) -> bool:
        record = {
            "attempt": self.attempt,
            "reason": reason,
            "counts": counts,
            "by": self.record.get("daemon"),
            "at": utc_now(),
        }
        self._fenced = True
        return publish_exclusive(
            self.spool.tmp, self.attempts / f"{self.attempt}.end", _json_bytes(record)
        )

    def hand_back(self, reason: str = "handed back") -> bool:
        """Graceful stop (SIGTERM): the job is queued again and this attempt does not count."""
        return self._end(reason, counts=False)

    def abandon(self, reason: str) -> bool:
        """This attempt failed (worker crash, fenced): queued again, and it counts (spec 6)."""
        return self._end(reason, counts=True)


def _budget(attempts_dir: Path, found: _Attempts) -> tuple[int, str]:
    """(attempts counted since the last retry, the last reason): hand-backs do not count."""
    used, reason = 0, "no reason recorded"
    for n in sorted(found.ends):
        if n < found.budget_start:
            continue
        end = _read_json(attempts_dir / f"{n}.end") or {}
        if end.get("counts", True):
            used += 1
            reason = str(end.get("reason", reason))
    return used, reason


def try_claim(
    spool: Spool,
    job_id: str,
    me: DaemonIdentity,
    *,
    max_attempts: int | None = None,
    t_fence: float = T_FENCE_S,
) -> Claim | None:
    """Claim the next attempt of a queued job, or None (not queued, or another daemon won).

    Exclusive creation: the record is written privately, then linked to ``<n>.claim``; of any
    number of daemons exactly one link succeeds. Attempt n is only tried once n-1 has ended, so
    no two attempts are ever open at once. Past ``max_attempts`` (from job.yaml unless given),
    the job ends failed instead; a cancelled queued job ends cancelled instead.
    """
    job_dir = spool.job_dir(job_id)
    if os.path.lexists(job_dir / RESULT):
        return None
    job = read_job(spool, job_id)
    if job is None:
        return None
    if finish_cancelled(spool, job_id):
        return None
    attempts_dir = job_dir / "attempts"
    found = _Attempts.scan(attempts_dir)
    if found.open_attempt is not None or found.publishes:
        return None  # running, or an ended attempt may have published: settle it first
    used, reason = _budget(attempts_dir, found)
    limit = max_attempts or (job.get("execution") or {}).get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if used >= limit:
        source = job.get("source") or job_id  # the file the user dropped
        message = f"{source}: gave up after {used} attempts: {reason}"
        write_result(
            spool,
            job_id,
            "failed",
            attempt=found.last,
            error={"message": message, "where": "claim"},
        )
        return None
    n = found.next_attempt
    record = {
        **me.record(),
        "job_id": job_id,
        "attempt": n,
        "token": secrets.token_hex(8),
        "claimed_at": utc_now(),
    }
    data = _json_bytes(record)
    attempts_dir.mkdir(exist_ok=True)
    if not publish_exclusive(spool.tmp, attempts_dir / f"{n}.claim", data):
        return None
    claim = Claim(spool, job_id, n, data, t_fence)
    if os.path.lexists(job_dir / RESULT):  # it ended while we claimed (e.g. cancelled)
        claim.hand_back("the job ended before it started")
        return None
    claim.beat()
    return claim


# --- 3.5 Publish, then result: one recoverable transition ----------------------------------
#
#   attempts/<n>.publish   link, before the version's rename   "attempt n may have published"
#
# The worker records its intent (where it publishes, for which submission), then renames the
# version into the model store (its metadata.json names job, submission and attempt), then
# writes result.json. A job with an intent is never claimed again nor ended by anyone but
# publication.settle, which completes it with the version or withdraws the version.


def record_publish_intent(claim: Claim, where: dict[str, Any]) -> None:
    """Say, before renaming a version into place, where attempt n publishes; first writer wins
    (an attempt publishes once)."""
    record = {"attempt": claim.attempt, "at": utc_now(), **where}
    path = claim.attempts / f"{claim.attempt}.publish"
    publish_exclusive(claim.spool.tmp, path, _json_bytes(record))


def publish_intents(spool: Spool, job_id: str) -> list[dict[str, Any]]:
    """Every recorded intent of the job (an unreadable one as an empty record)."""
    folder = spool.attempts_dir(job_id)
    found = _Attempts.scan(folder)
    return [_read_json(folder / f"{n}.publish") or {} for n in sorted(found.publishes)]


def clear_publish_intents(spool: Spool, job_id: str) -> None:
    """The job is settled: its versions are accounted for by result.json."""
    folder = spool.attempts_dir(job_id)
    for n in _Attempts.scan(folder).publishes:
        (folder / f"{n}.publish").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        fsync_dir(folder)


def has_open_attempt(spool: Spool, job_id: str) -> bool:
    return _Attempts.scan(spool.attempts_dir(job_id)).open_attempt is not None


@dataclass(frozen=True)
class Reclaimable:
    """An open attempt whose owner the judge found dead, and why."""

    job_id: str
    attempt: int
    record: dict[str, Any]
    reason: str


def find_reclaimable(spool: Spool, judge: LivenessJudge,
                     folders: list[JobFolder] | None = None) -> list[Reclaimable]:
    """Scan running jobs; each call feeds the judge's memory, so call it every rescan."""
    dead, watched = [], set()
    for folder in scan_jobs(spool) if folders is None else folders:
        if RESULT in folder.names or "attempts" not in folder.names:
            continue  # decided by names alone: nothing built or read for finished jobs
        attempts_dir = Path(folder.path, "attempts")
        if not os.path.isdir(attempts_dir):
            continue
        n = _Attempts.scan(attempts_dir).open_attempt
        if n is None:
            continue
        # An unreadable claim (emptied by hand, torn by a disk) names no owner to ask about:
        # it is judged by its silence like any owner on another host, never left running.
        record = _read_json(attempts_dir / f"{n}.claim") or {}
        try:
            counter = _read_bounded(attempts_dir / f"{n}.beat", 64)
        except OSError:
            counter = None
        key = f"claim:{folder.id}:{n}:{record.get('token')}"
        watched.add(key)
        if reason := judge.death(key, record, counter):
            dead.append(Reclaimable(folder.id, n, record, reason))
    judge.keep_only("claim:", watched)
    return dead


def reclaim(spool: Spool, found: Reclaimable, me: DaemonIdentity) -> bool:
    """End a dead owner's attempt; exactly one of several reclaiming daemons gets True.

    The attempt counts against the budget; the caller then calls :func:`try_claim`, which opens
    attempt n+1 (resuming from the checkpoint) or ends the job failed past ``max_attempts``.
    """
    record = {
        "attempt": found.attempt,
        "reason": found.reason,
        "counts": True,
        "by": me.daemon_id,
        "at": utc_now(),
        "owner": found.record.get("daemon"),
    }
    path = spool.attempts_dir(found.job_id) / f"{found.attempt}.end"
    return publish_exclusive(spool.tmp, path, _json_bytes(record))


# --- 5, 6. Result, cancel, retry, clean ---------------------------------------------------------


def write_result(
    spool: Spool, job_id: str, state: str, claim: Claim | None = None, **fields: Any
) -> bool:
    """Create ``result.json`` once; False when another writer was first or ``claim`` is fenced.

    With a claim, ownership is re-checked right before (spec 3.5), and ``completed`` also needs
    the job not cancelled: the caller then writes ``cancelled`` instead.
    """
    if state not in TERMINAL:
        raise ValueError(f"not a terminal state: {state!r}")
    if claim is not None:
        ok = claim.still_current() if state == "completed" else claim.still_owner()
        if not ok:
            return False
    record: dict[str, Any] = {"schema": 1, "state": state, "job_id": job_id}
    if claim is not None:
        record.update(
            attempt=claim.attempt, daemon=claim.record.get("daemon"), host=claim.record.get("host")
        )
    record["finished_at"] = utc_now()
    if state == "cancelled":
        record["cancelled_at"] = record["finished_at"]
    record.update(fields)
    record.setdefault("attempt", 0)
    return publish_exclusive(spool.tmp, spool.job_dir(job_id) / RESULT, _json_bytes(record))


def request_cancel(spool: Spool, job_id: str) -> None:
    """Ask for a cancel; its existence is the request (``touch`` does the same)."""
    job_dir = spool.job_dir(job_id)
    if not job_dir.is_dir():
        raise FileNotFoundError(f"no job {job_id!r} in {spool.jobs}")
    atomic_write(spool.tmp, job_dir / CANCEL, f"requested_at: {utc_now()}\n".encode())


def is_cancel_requested(spool: Spool, job_id: str) -> bool:
    return os.path.lexists(spool.job_dir(job_id) / CANCEL)


def finish_cancelled(spool: Spool, job_id: str) -> bool:
    """End a cancelled job nobody runs (queued, or its owner gone); True when we wrote it."""
    if not is_cancel_requested(spool, job_id) or job_state(spool, job_id) != "queued":
        return False
    found = _Attempts.scan(spool.attempts_dir(job_id))
    if found.publishes:
        return False  # a version may exist: only publication.settle ends this job
    return write_result(spool, job_id, "cancelled", attempt=found.last)


def retry_job(spool: Spool, job_id: str) -> int:
    """Requeue a failed or cancelled job; returns the attempt it will run as.

    Order matters: archive the result (``attempts/retry.<n>.<k>.json``, which also restarts the
    attempt budget at n), end the last attempt if its owner left it open, drop the cancel
    marker, and only then remove ``result.json``, the one step that makes the job queued again.
    A crash part-way leaves it terminal; retry again.
    A job that failed validation is validated again by the next rescan.
    """
    job_dir = spool.job_dir(job_id)
    result = read_result(spool, job_id)
    if result is None:
        raise ValueError(f"job {job_id!r} has not ended; only failed or cancelled jobs retry")
    if result.get("state") == "completed":
        raise ValueError(f"job {job_id!r} completed; submit it again to train a new version")
    attempts_dir = job_dir / "attempts"
    attempts_dir.mkdir(exist_ok=True)
    found = _Attempts.scan(attempts_dir)
    n, seq = found.next_attempt, 1 + max((k for _, k in found.retries), default=0)
    archive = _json_bytes({"first_attempt": n, "retried_at": utc_now(), "result": result})
    while not publish_exclusive(spool.tmp, attempts_dir / f"retry.{n}.{seq}.json", archive):
        seq += 1
    if found.last and found.last not in found.ends:  # so its owner, if any, sees it is over
        end = {"attempt": found.last, "reason": f"job {result.get('state')}", "counts": False}
        publish_exclusive(spool.tmp, attempts_dir / f"{found.last}.end", _json_bytes(end))
    Path(job_dir / CANCEL).unlink(missing_ok=True)
    Path(job_dir / RESULT).unlink(missing_ok=True)
    fsync_dir(job_dir)
    # Daemons skip finished folders while jobs/ is unchanged; where jobs/ is not ours to
    # touch they see the retry at their next full scan (LISTING_MAX_AGE_S).
    with contextlib.suppress(OSError):
        os.utime(spool.jobs)
    return n


def clean(spool: Spool, older_than_s: float, now: float | None = None) -> list[str]:
    """Remove terminal job folders whose result is older than ``older_than_s`` (never models).

    Age is the result's mtime against this host's clock, which is fine at the scale of days.
    A finished folder first leaves ``jobs/`` by one rename, so readers never see it
    half-deleted; a retry that raced the rename is put back. The empty folder of an acceptance
    that crashed goes by ``rmdir``, which fails once a drop was renamed into it: a drop being
    accepted is never removed. ``tmp/`` files older than :data:`TMP_STALE_S` go too (writers
    that died; a publish lives there for milliseconds).
    """
    now = time.time() if now is None else now
    removed = []
    for entry in _job_entries(spool):
        path = Path(entry.path)
        names = _names(path)
        try:
            age = now - os.stat(path / RESULT if RESULT in names else path).st_mtime
        except FileNotFoundError:
            continue
        if age < older_than_s:
            continue
        if RESULT not in names:
            if not names:
                with contextlib.suppress(OSError):  # not empty (any more): not ours to remove
                    os.rmdir(path)
            continue
        if _remove_finished(spool, path):
            removed.append(entry.name)
    spool.tmp.mkdir(exist_ok=True)
    for entry in list(os.scandir(spool.tmp)):
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime >= TMP_STALE_S:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
        except FileNotFoundError:
            continue
    return removed


def _remove_finished(spool: Spool, path: Path) -> bool:
    """Move a finished job folder out of ``jobs/`` in one rename, then delete it at leisure."""
    trash = spool.tmp / f"clean.{path.name}.{secrets.token_hex(4)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return False
    if not os.path.lexists(trash / RESULT):  # retried between our look and the rename
        with contextlib.suppress(OSError):
            os.rename(trash, path)
            return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


# --- 4. Daemon heartbeats --------------------------------------------------------------------


def write_daemon_heartbeat(spool: Spool, me: DaemonIdentity, info: dict[str, Any]) -> None:
    """Replace ``daemons/<id>.json``. ``beat`` is this process's monotonic clock in ns: it
    changes at every write, which is all a reader compares (never against its own clock)."""
    record = {
        **info,
        **me.record(),
        "id": me.daemon_id,
        "beat": time.monotonic_ns(),
        "updated_at": utc_now(),
    }
    path = spool.daemons / f"{me.daemon_id}.json"
    atomic_write(spool.tmp, path, _json_bytes(record), durable=False)


_DAEMON_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "daemon": (str,), "host": (str,), "pid": (int,), "device": (str,),
    "device_name": (str, type(None)), "slots": (int,), "free_slots": (int,), "running": (list,),
    "counters": (dict,), "updated_at": (str,), "memory_bytes": (int, type(None)),
}


def _malformed_keys(record: dict[str, Any]) -> list[str]:
    """The keys of a heartbeat record whose values have the wrong type (bools are not ints)."""
    bad = [key for key, types in _DAEMON_FIELDS.items() if key in record
           and (not isinstance(record[key], types) or isinstance(record[key], bool))]
    running = record.get("running")
    if isinstance(running, list) and not all(isinstance(job, str) for job in running):
        bad.append("running")
    return bad


def remove_daemon_heartbeat(spool: Spool, me: DaemonIdentity) -> None:
    """A clean exit: the daemon disappears from ``ktrdr-daemon daemons`` at once."""
    (spool.daemons / f"{me.daemon_id}.json").unlink(missing_ok=True)


def read_daemons(spool: Spool, judge: LivenessJudge) -> list[dict[str, Any]]:
    """Every heartbeat file plus ``alive``, ``silent_s`` and ``dead_reason`` as this judge sees
    it. Call it regularly: a silence is measured between this judge's own looks."""
    daemons = []
    try:
        entries = sorted(os.scandir(spool.daemons), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.endswith(".json") or is_ignored_name(entry.name):
            continue
        record = _read_json(Path(entry.path))
        if record is None:
            continue
        key = f"daemon:{entry.name}:{record.get('pid')}:{record.get('pid_start')}"
        reason = judge.death(key, record, record.get("beat"))
        if bad := _malformed_keys(record):  # a peer's file edited or torn: never trusted
            record = {k: v for k, v in record.items() if k not in bad}
            record.setdefault("id", entry.name[: -len(".json")])
            reason = f"malformed heartbeat ({', '.join(bad)})"
        daemons.append(
            {
                **record,
                "alive": reason is None,
                "dead_reason": reason,
                "silent_s": round(judge.silent_for(key), 3),
            }
        )
    return daemons
