"""The one progress callback of the pipeline.

Events are plain JSON-ready dicts so the daemon can write them to ``events.jsonl`` unchanged and
send them across a process boundary. Every event has ``"type"``; the types and their keys:

- ``step``:    step (1..12), steps (12), name ("data loading"), message ("Loading market data ...")
- ``substep``: step, message (an indented detail line of the log)
- ``warning``: message
- ``epoch``:   epoch (1-based), epochs, train_loss, train_accuracy, val_loss, val_accuracy,
               learning_rate, duration (s), best_epoch, best_val_loss; a regression model has
               train_/val_directional_accuracy instead of the accuracies, and val_mae
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


def epoch_metrics(event: Event) -> dict[str, float]:
    """The epoch's losses and rates (``train_*``, ``val_*``), whichever head trained."""
    return {k: v for k, v in event.items()
            if k.startswith(("train_", "val_")) and isinstance(v, int | float)}


def epoch_summary(event: Event) -> str:
    """An epoch event in one line: the losses and the head's hit rates (accuracy for a
    classifier, direction for a regression, whose losses are small: shown with 4 digits)."""
    regression = "train_directional_accuracy" in event
    hit, short, num = (("directional_accuracy", "dir", ".4g") if regression
                       else ("accuracy", "acc", ".4f"))
    line = (f"loss {event['train_loss']:{num}} {short} {event[f'train_{hit}']:.3f} "
            f"val_loss {event['val_loss']:{num}} val_{short} {event[f'val_{hit}']:.3f}")
    if "val_mae" in event:
        line += f" val_mae {event['val_mae']:.4g}"
    return line
