"""Pipeline events on a terminal: the numbered log lines, and a live bar while training."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.events import epoch_summary


class TerminalReporter:
    """A pipeline ``on_event`` callback that prints like ``log.txt`` and draws a training bar."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.progress: Progress | None = None
        self.task: Any = None
        self.last: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "step":
            self.close_bar()
            self.console.print(event["message"])
        elif kind == "substep":
            self.console.print(f"   {event['message']}")
        elif kind == "warning":
            self.console.print(f"   [yellow]warning:[/] {event['message']}")
        elif kind == "batch":
            self._bar(event)
        elif kind == "epoch":
            self.last = event
            self._bar(event)

    def _bar(self, event: dict[str, Any]) -> None:
        epochs = event["epochs"]
        if self.progress is None:
            self.progress = Progress(
                TextColumn("   epoch"), MofNCompleteColumn(), BarColumn(),
                TextColumn("{task.fields[losses]}"), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("training", total=epochs, losses="")
        done = event["epoch"] if event["type"] == "epoch" else (
            event["epoch"] - 1 + event["batch"] / max(event["batches"], 1))
        losses = ""
        if self.last:
            losses = epoch_summary(self.last)
        self.progress.update(self.task, completed=done, total=epochs, losses=losses)

    def close_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
