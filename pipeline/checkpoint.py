"""Checkpoints: when to take one (a callback of the trainer) and how one is stored (torch.save).

When. The trainer knows neither files nor clocks. At each point where its state is whole (the
end of a batch, the end of an epoch counting as its last batch's end), at a hand-back and at the
end of training, it calls its checkpoint callback with a function that copies that state, the
way Lightning's loop calls a ``ModelCheckpoint`` callback. :class:`IntervalCheckpoint` is the one
policy: at most every ``every_seconds`` (a crash loses at most that much training, and a short
job pays for no checkpoint while it trains), always at a hand-back (the next attempt resumes
exactly there), always at the end (a worker that dies after training, before it publishes, does
not train again). Copying the state is the only cost on the training thread, and only when a
checkpoint is due.

How. ``torch.save`` of plain values (tensors, dicts, lists, tuples, numbers, strings, None),
read back by ``torch.load(weights_only=True)``, which rebuilds those types only and never runs
code named in the file. A ``torch.save`` file is a zip archive whose members carry a CRC-32,
which torch does not check when it reads; :func:`from_bytes` does, so blocks that a power loss
left zeroed are caught too. A torn, corrupted or forged file is a :class:`ValueError`, and the
caller starts over.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from typing import Any, Protocol

import torch

Snapshot = Callable[[], dict[str, Any]]  # copies the trainer's state at the point it is given


class CheckpointCallback(Protocol):
    """What the trainer calls; each hook gets a :data:`Snapshot` and may call it or not."""

    def on_batch_end(self, snapshot: Snapshot) -> None:
        """After every batch (an epoch's end stands for its last batch)."""

    def on_handback(self, snapshot: Snapshot) -> None:
        """Training stops here to be resumed elsewhere (the trainer raises HandedBack next)."""

    def on_train_end(self, snapshot: Snapshot) -> None:
        """The last epoch (or an early stop) is done; the model is not yet set to the best."""


class IntervalCheckpoint:
    """Saves a state at most every ``every_seconds`` of training, and always at a hand-back and
    at the end. ``every_seconds`` 0 saves at every batch. The interval counts from the first
    batch's end (not from the job's start: loading data is not training that could be lost)
    and from the end of the last save."""

    def __init__(self, save: Callable[[dict[str, Any]], None], every_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not every_seconds >= 0:  # NaN too
            raise ValueError(f"a checkpoint interval must be >= 0 seconds, got {every_seconds}")
        self.save, self.every_seconds, self.clock = save, every_seconds, clock
        self._last: float | None = None  # when the last save ended (or training began)

    def on_batch_end(self, snapshot: Snapshot) -> None:
        now = self.clock()
        if self._last is None:
            self._last = now
        if now - self._last >= self.every_seconds:
            self._take(snapshot)

    def on_handback(self, snapshot: Snapshot) -> None:
        self._take(snapshot)

    def on_train_end(self, snapshot: Snapshot) -> None:
        self._take(snapshot)

    def _take(self, snapshot: Snapshot) -> None:
        self.save(snapshot())
        self._last = self.clock()


def to_bytes(state: dict[str, Any]) -> bytes:
    """``state`` (plain values and CPU tensors) as a ``torch.save`` file's bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Any:
    """What :func:`to_bytes` wrote, its tensors on the CPU. ``weights_only``: only tensors and
    plain containers and values are rebuilt; a torn or corrupted file, or one that names
    anything else (code to run), raises ``ValueError``."""
    try:
        damaged = zipfile.ZipFile(io.BytesIO(data)).testzip()  # each member's CRC-32
        if damaged is not None:
            raise ValueError(f"{damaged} does not match its CRC-32")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and storage errors alike: not a file we wrote
        raise ValueError(f"not a readable checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def describe_resume(state: dict[str, Any], epochs: int, attempt: int) -> str:
    """The log line of an attempt that resumes from ``state``: where training picks up (the
    epoch it continues, 1-based, and the batch if mid-epoch), of how many, in which attempt.
    A state taken at the end of training resumes to evaluate and save only."""
    done, batch = int(state.get("epoch", 0)), int(state.get("batch", 0))
    progress = state.get("progress") or {}
    if done >= epochs or progress.get("stopped_early"):
        where = (f"after training ended ({done} of {epochs} epochs run); evaluating and saving "
                 "only")
    else:
        where = f"at epoch {done + 1} of {epochs}" + (f", batch {batch + 1}" if batch else "")
    return f"resumed from checkpoint {where} (attempt {attempt})"
