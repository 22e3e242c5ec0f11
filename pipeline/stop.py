"""The stop token the trainer checks between batches.

The pipeline never looks at files or signals itself; whoever runs it (the CLI, a daemon worker)
owns a token and flips it. ``reason()`` is called once per batch, so it must be cheap.
"""

from __future__ import annotations

import threading
from typing import Literal, Protocol

from pipeline.errors import Cancelled, HandedBack

StopReason = Literal["cancel", "handback"]


class StopSource(Protocol):
    """Anything that can say whether (and why) training should stop now."""

    def reason(self) -> StopReason | None: ...


class StopToken:
    """A thread-safe flag: ``request('cancel')`` or ``request('handback')``; first request wins
    unless a cancel follows a hand-back (a cancel always wins: the user's intent is final)."""

    def __init__(self) -> None:
        self._reason: StopReason | None = None
        self._lock = threading.Lock()

    def request(self, reason: StopReason) -> None:
        with self._lock:
            if self._reason is None or reason == "cancel":
                self._reason = reason

    def reason(self) -> StopReason | None:
        return self._reason


def raise_if_stopped(stop: StopSource | None) -> None:
    """Raise :class:`Cancelled` or :class:`HandedBack` when a stop was requested."""
    if stop is None:
        return
    why = stop.reason()
    if why == "cancel":
        raise Cancelled("cancelled on request")
    if why == "handback":
        raise HandedBack("handed back on request")
