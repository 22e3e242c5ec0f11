"""Pipeline events -> the job folder's files (spool spec section 5).

- ``progress.json``: the latest snapshot, replaced atomically; written at most ~10 times a second
  for batches, and at once for every step, epoch, warning and state change.
- ``events.jsonl``: one JSON object a line for steps, sub-steps, epochs, warnings and states.
- ``log.txt``: the human log, numbered steps with indented sub-steps.

The writer is identical whichever daemon (or ``train``) runs the job, so readers see one format.
Its files are written by a :class:`~ktrdr_daemon.file_writer.FileWriter` thread, so the training
loop never waits on the disk; :meth:`ProgressWriter.close` (or ``files.flush()``) waits for them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ktrdr_daemon.file_writer import FileWriter
from ktrdr_daemon.job_files import initial_snapshot, utc_now
from pipeline.events import epoch_metrics, epoch_summary

MIN_INTERVAL = 0.1  # seconds between throttled writes: at most ~10 a second
# Overall percent: steps 1-7 take the first 5 %, training 5-95 %, steps 9-12 the rest.
_TRAIN_START, _TRAIN_END = 5.0, 95.0
# Made once: json.dumps with options builds an encoder per call (this runs every epoch).
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_EVENT = json.JSONEncoder(default=str)


class ProgressWriter:
    """A pipeline ``on_event`` callback that keeps a job's three progress files."""

    def __init__(self, job_dir: Path, tmp_dir: Path, *, job_id: str, attempt: int,
                 daemon: str | None, host: str | None, device: str | None) -> None:
        self.job_dir, self.tmp_dir = job_dir, tmp_dir
        self.snapshot = initial_snapshot(job_id, attempt, daemon, host, device)
        self._last_write = 0.0
        self._train_started: float | None = None
        self.files = FileWriter(tmp_dir)  # the worker's checkpoints go through it too
        self._progress = job_dir / "progress.json"
        self._events = job_dir / "events.jsonl"
        self._log = job_dir / "log.txt"

    # -- the pipeline callback -------------------------------------------------------------
    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        snap = self.snapshot
        if kind == "step":
            snap.update(step=event["step"], phase=event["name"], message=event["message"])
            snap["percent"] = self._step_percent(event["step"])
            self.log(event["message"])
        elif kind == "substep":  # a detail line of the log: progress.json has nothing new
            self.log(f"   {event['message']}")
            self._append_event(event)
            return
        elif kind == "warning":
            snap["warnings"].append(event["message"])
            self.log(f"   warning: {event['message']}")
        elif kind == "batch":
            self._training(event)
            if time.monotonic() - self._last_write < MIN_INTERVAL:
                return  # throttled: batches are frequent, the file is refreshed ~10x a second
        elif kind == "epoch":
            self._training(event)
            snap["metrics"] = epoch_metrics(event)
            snap["best"] = {"epoch": event["best_epoch"], "val_loss": event["best_val_loss"]}
            self.log(f"   epoch {event['epoch']}/{event['epochs']}: {epoch_summary(event)} "
                     f"({event['duration']:.2f}s)")
        if kind != "batch":
            self._append_event(event)
        self._write_snapshot()

    # -- state changes written by the worker or the daemon ----------------------------------
    def set_state(self, state: str, **fields: Any) -> None:
        self.snapshot.update(state=state, **fields)
        if state == "completed":
            self.snapshot["percent"] = 100.0
            self.snapshot["eta_seconds"] = 0.0
        self._append_event({"type": "state", "state": state, **fields})
        self.log(f"[{state}]" + (f" {fields['error']['message']}"
                                        if fields.get("error") else ""))
        self._write_snapshot()

    def _write_snapshot(self) -> None:
        # Encoded here, not on the writer thread: Python there holds the GIL this thread
        # needs (bench_overhead found no gain in moving it).
        self.snapshot["updated_at"] = utc_now()
        self.files.replace(self._progress, _COMPACT.encode(self.snapshot).encode())
        self._last_write = time.monotonic()

    def close(self) -> None:
        """Wait until every file handed to the writer thread is written (raises its error)."""
        self.files.close()

    # -- helpers ---------------------------------------------------------------------------
    def _training(self, event: dict[str, Any]) -> None:
        snap = self.snapshot
        epoch, epochs = event["epoch"], event["epochs"]
        batches = event.get("batches") or snap.get("batches") or 1
        batch = event.get("batch", batches)
        done = (epoch - 1 + batch / batches) / epochs if event["type"] == "batch" else (
            epoch / epochs)
        snap.update(epoch=epoch, epochs=epochs, batch=batch, batches=batches,
                    message=f"8. Training model: epoch {epoch}/{epochs}")
        snap["percent"] = round(_TRAIN_START + (_TRAIN_END - _TRAIN_START) * done, 1)
        now = time.monotonic()
        if self._train_started is None:
            self._train_started = now
        elapsed = now - self._train_started
        if done > 0 and elapsed > 0:
            snap["eta_seconds"] = round(elapsed / done * (1 - done), 1)

    @staticmethod
    def _step_percent(step: int) -> float:
        if step <= 8:
            return round(_TRAIN_START * (step - 1) / 7, 1)
        return round(_TRAIN_END + (100 - _TRAIN_END) * (step - 8) / 5, 1)

    def _append_event(self, event: dict[str, Any]) -> None:
        line = _EVENT.encode({"at": utc_now(), **event}) + "\n"
        self.files.append(self._events, line.encode())

    def log(self, line: str) -> None:
        """Append a line to ``log.txt`` (the daemon's own notes go here too)."""
        self.files.append(self._log, (line + "\n").encode())
