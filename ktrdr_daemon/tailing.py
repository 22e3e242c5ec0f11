"""Following a job from its files alone: ``ktrdr-daemon tail`` and the live view of ``run``.

A reader never talks to the daemon. It polls three files of the job folder (spool spec 5):
``progress.json`` (small, replaced atomically: re-read only when its stat changes),
``log.txt`` and ``events.jsonl`` (append-only: only the new bytes are read, so a long run
costs nothing more to follow). ``result.json`` existing is the end (spec 1).
A stat every ~0.15 s is cheaper and simpler than filesystem events, and it works the same
on NFS and SMB, where no events arrive.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ktrdr_daemon import spool as sp
from ktrdr_daemon.job_files import initial_snapshot
from ktrdr_daemon.safe_text import printable

POLL_S = 0.15
VANISH_S = 5.0  # a drop gone from incoming/ with no job folder this long: give up
SETTLE_S = 1.0  # after result.json, wait this long at most for progress.json to mirror it
SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 16
EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 2}


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The last ``width`` values as block characters, lowest value lowest (a falling loss
    reads as a descending line)."""
    values = [v for v in values[-width:] if isinstance(v, int | float)]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:
        return SPARK[len(SPARK) // 2] * len(values)
    return "".join(SPARK[round((v - low) / span * (len(SPARK) - 1))] for v in values)


class _Appended:
    """The new complete lines of an append-only file, read from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size < self.offset:
                    self.offset, self.partial = 0, b""  # replaced or truncated: start over
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]


@dataclass
class JobView:
    """What a reader knows about a job, refreshed from its files by :meth:`poll`."""

    spool: sp.Spool
    job_id: str
    snapshot: dict[str, Any] = field(default_factory=dict)
    val_losses: list[float] = field(default_factory=list)
    result: dict[str, Any] | None = None
    last_change: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        folder = self.spool.job_dir(self.job_id)
        self.folder = folder
        self._progress_sig: tuple[int, int, int] | None = None
        self._log = _Appended(folder / "log.txt")
        self._events = _Appended(folder / "events.jsonl")
        self.snapshot = initial_snapshot(self.job_id)
        self.snapshot["message"] = "queued: waiting for a daemon to claim it"

    def poll(self) -> tuple[bool, list[str]]:
        """Re-read what changed: (progress.json changed, new log lines)."""
        changed = self._read_progress()
        for line in self._events.new_lines():
            if '"epoch"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("type") == "epoch" and isinstance(event.get("val_loss"), int | float):
                self.val_losses.append(float(event["val_loss"]))
        if self.result is None and os.path.lexists(self.folder / sp.RESULT):
            self.result = sp.read_result(self.spool, self.job_id) or {"state": "failed"}
        return changed, self._log.new_lines()

    def _read_progress(self) -> bool:
        path = self.folder / "progress.json"
        try:
            st = os.stat(path)
        except OSError:
            return False
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature == self._progress_sig:
            return False
        try:
            snapshot = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return False  # replaced between stat and read: the next poll gets it
        self._progress_sig = signature
        if not isinstance(snapshot, dict) or snapshot == self.snapshot:
            return False
        self.snapshot, self.last_change = snapshot, time.monotonic()
        return True

    @property
    def state(self) -> str:
        if self.result is not None:
            return str(self.result.get("state", "failed"))
        return str(self.snapshot.get("state") or "queued")

    def settled(self) -> bool:
        """The job ended and progress.json says so too (or it never will: see SETTLE_S)."""
        return self.result is not None and self.snapshot.get("state") == self.state

    def final_snapshot(self) -> dict[str, Any]:
        """The last snapshot, made to agree with result.json when progress.json never did
        (a daemon that died between the two writes)."""
        snap = dict(self.snapshot)
        if self.result is not None and snap.get("state") != self.state:
            snap["state"] = self.state
            for key in ("error", "model_path", "attempt", "device", "daemon"):
                if self.result.get(key) is not None:
                    snap[key] = self.result[key]
        return snap


def watch(spool: sp.Spool, job_id: str, *, poll_s: float = POLL_S,
          stop: threading.Event | None = None) -> Iterator[tuple[JobView, bool, list[str]]]:
    """Yield ``(view, progress changed, new log lines)`` until the job ends (result.json)."""
    view = JobView(spool, job_id)
    first = True
    ended_at: float | None = None
    missing_since: float | None = None
    while stop is None or not stop.is_set():
        if not view.folder.is_dir():  # submitted, not accepted yet: wait in incoming/
            dropped = any(os.path.lexists(spool.incoming / f"{job_id}{suffix}")
                          for suffix in sp.DROP_SUFFIXES)
            view.snapshot["message"] = "submitted: waiting for a daemon to accept it"
            missing_since = None if dropped else missing_since or time.monotonic()
            if missing_since is not None and time.monotonic() - missing_since > VANISH_S:
                raise LookupError(f"job {job_id!r} is neither in {spool.incoming} nor in "
                                  f"{spool.jobs} (accepted under another id? see ls)")
        changed, lines = view.poll()
        if changed or lines or first:
            yield view, changed or first, lines
        first = False
        if view.result is not None:
            ended_at = ended_at or time.monotonic()
            if view.settled() or time.monotonic() - ended_at >= SETTLE_S:
                changed, lines = view.poll()
                yield view, changed, lines
                return
        time.sleep(poll_s)


# --- rendering ------------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    value = int(value)
    return f"{value // 3600}:{value % 3600 // 60:02d}:{value % 60:02d}" if value >= 3600 else (
        f"{value // 60}:{value % 60:02d}")


def _bar(percent: float, width: int = 20) -> Text:
    filled = round(max(0.0, min(percent, 100.0)) / 100 * width)
    return Text.assemble(("━" * filled, "green"), ("━" * (width - filled), "grey37"))


def status_line(view: JobView) -> Text:
    """One line: job, state, bar, percent, epoch or step, losses, ETA, val_loss sparkline."""
    snap = view.snapshot
    state = view.state
    line = Text.assemble((view.job_id, "bold"), " ", state)
    if state == "queued":
        line.append(printable(f" {snap.get('message') or 'waiting for a daemon'}"))
        return line
    if snap.get("device"):
        line.append(printable(f" on {snap['device']}"))
    percent = float(snap.get("percent") or 0.0)
    line.append(" ")
    line.append_text(_bar(percent))
    parts = [f"{percent:5.1f}%"]
    if snap.get("epoch") is not None and snap.get("step") == 8:
        parts.append(f"epoch {snap['epoch']}/{snap.get('epochs')}")
    elif snap.get("step"):
        parts.append(printable(f"step {snap['step']}/{snap.get('steps', 12)} "
                               f"{snap.get('phase') or ''}"))
    metrics = snap.get("metrics") or {}
    if isinstance(metrics.get("train_loss"), int | float):
        parts.append(f"loss {metrics['train_loss']:.4f}")
    if isinstance(metrics.get("val_loss"), int | float):
        parts.append(f"val {metrics['val_loss']:.4f}")
    if state == "running":
        parts.append(f"eta {_seconds(snap.get('eta_seconds'))}")
    line.append(" " + " ".join(parts))
    if len(view.val_losses) >= 2:
        line.append(f" {sparkline(view.val_losses)}", style="cyan")
    silent = time.monotonic() - view.last_change
    if state == "running" and silent > 30:
        line.append(f" (no update for {silent:.0f} s)", style="yellow")
    return line


def follow(spool: sp.Spool, job_id: str, console: Console | None = None, *,
           show_log: bool = True, poll_s: float = POLL_S,
           stop: threading.Event | None = None) -> str:
    """Draw a job's live progress on ``console`` until it ends; returns its state.

    The log lines are printed above the bar as they appear. Returns ``"interrupted"`` when
    ``stop`` is set first (the job goes on). Needs only the files, so it works in any process:
    ``tail`` runs it in the foreground, a daemon may run it in a thread for a job it started.
    On a console that is not a terminal (a pipe, a file) there is no bar: the log lines, then
    the final line.
    """
    console = console or Console(highlight=False)
    state, view = "interrupted", None
    live = Live(Text(""), console=console, refresh_per_second=8, transient=True,
                auto_refresh=console.is_terminal) if console.is_terminal else None
    try:
        if live is not None:
            live.start()
        for view, _changed, lines in watch(spool, job_id, poll_s=poll_s, stop=stop):
            for line in lines if show_log else []:
                console.print(printable(line), markup=False, highlight=False,
                              soft_wrap=True)
            if live is not None:
                line = status_line(view)
                line.no_wrap, line.overflow = True, "ellipsis"  # one line, however narrow
                live.update(line)
            if view.result is not None:
                state = view.state
    finally:
        if live is not None:
            live.stop()
    if view is not None and state != "interrupted":
        console.print(status_line(view), soft_wrap=True)
        console.print(_summary(view), soft_wrap=True)
    return state


def start_follow(spool: sp.Spool, job_id: str, console: Console | None = None,
                 **options: Any) -> threading.Event:
    """:func:`follow` in a daemon thread (for ``run`` on a terminal); set the returned event
    to stop drawing (the job itself is not affected)."""
    stop = threading.Event()
    threading.Thread(target=follow, args=(spool, job_id, console), name=f"follow:{job_id}",
                     kwargs={"stop": stop, **options}, daemon=True).start()
    return stop


def _summary(view: JobView) -> Text:
    result = view.result or {}
    state = view.state
    if state == "completed":
        test = (result.get("metrics") or {}).get("test") or {}
        acc = test.get("test_accuracy")
        extra = f", test accuracy {acc:.3f}" if isinstance(acc, int | float) else ""
        return Text(printable(f"completed: {result.get('model_path')}{extra}"), style="green")
    if state == "failed":
        return Text(printable(f"failed: {(result.get('error') or {}).get('message')}"),
                    style="red")
    return Text(f"{state}", style="yellow")


def follow_json(spool: sp.Spool, job_id: str, out: IO[str], *, poll_s: float = POLL_S,
                stop: threading.Event | None = None,
                emit: Callable[[str], None] | None = None) -> str:
    """One JSON snapshot a line each time progress.json changes; the last one carries the
    terminal state. Returns the state (``"interrupted"`` when ``stop`` was set first)."""
    emit = emit or (lambda text: (out.write(text + "\n"), out.flush()))
    last: dict[str, Any] | None = None
    view = None
    for view, changed, _lines in watch(spool, job_id, poll_s=poll_s, stop=stop):
        snap = view.final_snapshot() if view.result is not None else view.snapshot
        if changed and snap != last:
            emit(json.dumps(snap, separators=(",", ":")))
            last = snap
    if view is None or view.result is None:
        return "interrupted"
    final = view.final_snapshot()
    if final != last:
        emit(json.dumps(final, separators=(",", ":")))
    return view.state
