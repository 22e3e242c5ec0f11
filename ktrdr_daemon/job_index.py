"""Reading a job's state: derived from which files exist (spec 1), with the caches that make a
rescan over thousands of finished jobs cost one stat each.

The one reader of ``job.yaml`` and ``result.json``; writers live in :mod:`ktrdr_daemon.spool`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ktrdr_daemon.atomic import read_bounded, read_json
from ktrdr_daemon.job_lines import plain_header
from ktrdr_daemon.layout import (
    ATTEMPT_FILE,
    CANCEL,
    JOB,
    RESULT,
    RETRY_FILE,
    SUBMITTED,
    TERMINAL,
    Spool,
    State,
    is_safe_name,
)
from ktrdr_daemon.untrusted_yaml import MAX_DROP_BYTES, _Loader
from pipeline.job import parse_execution


def job_entries(spool: Spool) -> Iterator[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(spool.jobs))
    except FileNotFoundError:
        return
    for entry in entries:
        if is_safe_name(entry.name) and entry.is_dir(follow_symlinks=False):
            yield entry


def folder_names(folder: str | Path) -> set[str]:
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
    names = frozenset(folder_names(path))  # listed after the stat: never older than its key
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
               for entry in job_entries(spool)]
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
        for name in folder_names(folder):
            if match := ATTEMPT_FILE.fullmatch(name):
                n, kind = int(match[1]), match[2]
                if kind == "claim":
                    found.claims.add(n)
                elif kind == "end":
                    found.ends.add(n)
                elif kind == "publish":
                    found.publishes.add(n)
            elif match := RETRY_FILE.fullmatch(name):
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

    @property
    def current(self) -> int:
        """The attempt a reader shows: the last one claimed, or, after a retry, the one the
        job runs as next (what ``retry`` printed), until a claim of that number exists. Every
        reader (``ls``, ``show``, their ``--json``) takes it from here."""
        return max(self.last, self.budget_start) if self.retries else self.last


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
    job = yaml.load(read_bounded(path, MAX_DROP_BYTES * 2), Loader=_Loader)  # safe loader
    return job if isinstance(job, dict) else None


def read_job(spool: Spool, job_id: str) -> dict[str, Any] | None:
    """``job.yaml`` or None when not accepted yet."""
    return _cached(spool.job_dir(job_id) / JOB, _job_cache, _parse_job)


def read_job_header(spool: Spool, job_id: str) -> dict[str, Any] | None:
    """The spool's own keys of ``job.yaml`` (id, submitted_at, source, priority, execution),
    or None when not accepted yet. :func:`finish_accept` writes them first, so only those
    lines are parsed, not the resolved strategy below them (~50x less YAML: ``ls`` and a
    daemon's first rescan over 10,000 queued jobs), and in the dumper's plain form without
    YAML at all (:func:`plain_header`, ~10x cheaper). Any other layout: the whole file."""

    def parse(path: Path) -> dict[str, Any] | None:
        lines = []
        for line in read_bounded(path, 1 << 13).split(b"\n")[:-1]:  # the last may be cut
            key = line.split(b":", 1)[0].decode(errors="replace")
            if not line.startswith(b" ") and key not in _HEADER_KEYS:
                break
            lines.append(line)
        header = plain_header(lines)  # the dumper's plain lines, without building YAML objects
        if header is None:
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
        data = read_bounded(path, 1 << 20)
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


def info_from_names(spool: Spool, job_id: str, job_dir: Path, names: set[str]) -> JobInfo:
    """State per spec 1: ``result.json`` -> terminal; an open claim -> running; else queued."""
    job, broken = _header_or_problem(spool, job_id) if JOB in names else (None, None)
    attempts = _Attempts.scan(job_dir / "attempts") if "attempts" in names else _Attempts()
    info = JobInfo(job_id, "queued", job is not None, attempt=attempts.current, broken=broken)
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
        info.daemon = (read_json(job_dir / "attempts" / f"{n}.claim") or {}).get("daemon")
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
    return info_from_names(spool, job_id, job_dir, folder_names(job_dir))


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
            info = info_from_names(spool, folder.id, Path(folder.path), set(names))
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
