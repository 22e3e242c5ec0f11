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
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ktrdr_daemon.atomic import (
    atomic_write,
    drop_exclusive,
    fsync_dir,
    json_bytes,
    publish_exclusive,
    read_bounded,
    read_json,
)
from ktrdr_daemon.identity import (
    T_EXPIRE_S as T_EXPIRE_S,
)
from ktrdr_daemon.identity import (
    DaemonIdentity as DaemonIdentity,
)
from ktrdr_daemon.identity import (
    LivenessJudge as LivenessJudge,
)
from ktrdr_daemon.job_index import (
    JobFolder as JobFolder,
)
from ktrdr_daemon.job_index import (
    JobInfo as JobInfo,
)
from ktrdr_daemon.job_index import (
    _Attempts,
    folder_names,
    job_entries,
    job_state,
    read_job,
    read_result,
    scan_jobs,
)
from ktrdr_daemon.job_index import (
    info_from_names as info_from_names,
)
from ktrdr_daemon.job_index import (
    job_info as job_info,
)
from ktrdr_daemon.job_index import (
    list_jobs as list_jobs,
)
from ktrdr_daemon.job_index import (
    queued_jobs as queued_jobs,
)
from ktrdr_daemon.job_index import (
    queued_jobs_in_order as queued_jobs_in_order,
)
from ktrdr_daemon.job_index import (
    read_job_header as read_job_header,
)
from ktrdr_daemon.layout import (
    CANCEL,
    DROP_SUFFIXES,
    IGNORED_SUFFIXES,
    JOB,
    RESULT,
    SUBMITTED,
    TERMINAL,
    Spool,
    is_safe_name,
    utc_now,
)
from ktrdr_daemon.layout import (
    State as State,
)
from ktrdr_daemon.untrusted_yaml import (
    MAX_DROP_BYTES,
    JobFileError,
    load_job_mapping,
)
from pipeline import safe_yaml
from pipeline.job import EXECUTION_DEFAULTS, parse_execution

HEARTBEAT_S = 2.0  # an owner rewrites its counter this often (spec 3.2)
T_FENCE_S = 15.0  # an owner that could not beat this long stops and publishes nothing (3.4)
# A drop not renamed in is complete once unchanged (inode, size, mtime) this long: a plain copy
# or an `echo >>` sequence with short pauses passes; closing a file proves nothing (section 2).
DROP_SETTLE_S = 1.0
# A stem folder without its drop is taken for another daemon's acceptance in flight this long:
# mkdir then rename is microseconds, but a starved process may sit between them for a second.
ACCEPT_RACE_S = 2.0
ORPHAN_GRACE_S = 10.0  # a moved drop left unvalidated this long was a crashed acceptance
TMP_STALE_S = 3600.0  # a file left in tmp/ this long belongs to a writer that died
DEFAULT_MAX_ATTEMPTS = EXECUTION_DEFAULTS["max_attempts"]



#: ``validate(mapping, filename) -> (normalized mapping, warnings)``; raises with a message
#: for the user. It sees the job without the spool's own keys (``priority``, ``execution``).
Validate = Callable[[dict[str, Any], str], tuple[dict[str, Any], list[str]]]


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
            data = read_bounded(submitted, MAX_DROP_BYTES + 1)
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
            data = read_bounded(job_dir / SUBMITTED, MAX_DROP_BYTES + 1)
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
        if drop_exclusive(spool.tmp, spool.incoming / f"{job_id}.yaml", data):
            return job_id
    raise AssertionError("unreachable")  # pragma: no cover


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
            lost = lost or read_bounded(self.path, 1 << 16) != self._data
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
            self.spool.tmp, self.attempts / f"{self.attempt}.end", json_bytes(record)
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
        end = read_json(attempts_dir / f"{n}.end") or {}
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
    data = json_bytes(record)
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
    publish_exclusive(claim.spool.tmp, path, json_bytes(record))


def publish_intents(spool: Spool, job_id: str) -> list[dict[str, Any]]:
    """Every recorded intent of the job (an unreadable one as an empty record)."""
    folder = spool.attempts_dir(job_id)
    found = _Attempts.scan(folder)
    return [read_json(folder / f"{n}.publish") or {} for n in sorted(found.publishes)]


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
        record = read_json(attempts_dir / f"{n}.claim") or {}
        try:
            counter = read_bounded(attempts_dir / f"{n}.beat", 64)
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
    return publish_exclusive(spool.tmp, path, json_bytes(record))


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
    return publish_exclusive(spool.tmp, spool.job_dir(job_id) / RESULT, json_bytes(record))


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
    archive = json_bytes({"first_attempt": n, "retried_at": utc_now(), "result": result})
    while not publish_exclusive(spool.tmp, attempts_dir / f"retry.{n}.{seq}.json", archive):
        seq += 1
    if found.last and found.last not in found.ends:  # so its owner, if any, sees it is over
        end = {"attempt": found.last, "reason": f"job {result.get('state')}", "counts": False}
        publish_exclusive(spool.tmp, attempts_dir / f"{found.last}.end", json_bytes(end))
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
    for entry in job_entries(spool):
        path = Path(entry.path)
        names = folder_names(path)
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
    atomic_write(spool.tmp, path, json_bytes(record), durable=False)


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
        record = read_json(Path(entry.path))
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
