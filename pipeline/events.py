"""The one progress callback of the pipeline.

Events are plain JSON-ready dicts so the daemon can write them to ``events.jsonl`` unchanged and
send them across a process boundary. Every event has ``"type"``; the types and their keys:

- ``step``:    step (1..12), steps (12), name ("data loading"), message ("Loading market data ...")
- ``substep``: step, message (an indented detail line of the log)
- ``warning``: message
- ``epoch``:   epoch (1-based), epochs, train_loss, train_accuracy, val_loss, val_accuracy,
               learning_rate, duration (s), best_epoch, best_val_loss
- ``batch``:   epoch, epochs, batch (1-based, done so far), batches  (rate-limited by the trainer)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
OnEvent = Callable[[Event], None]

STEPS: tuple[str, ...] = (
    "data loading",
    "indicators",
    "fuzzy memberships",
    "features",
    "labels",
    "dataset",
    "model creation",
    "training",
    "evaluation",
    "feature importance",
    "model saving",
    "results",
)


def ignore_event(event: Event) -> None:
    """The default callback: drop the event."""
