"""Errors the pipeline raises on purpose.

Each carries a message written for the user: what was wrong, where, and what is allowed.
The daemon copies ``str(error)`` into ``result.json`` unchanged, so messages must stand alone.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: an expected failure with a user-facing message (not a bug)."""


class StrategyError(PipelineError):
    """A strategy or job file is invalid. ``errors`` lists every problem found, one per line."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        head = f"{source}: " if source else ""
        noun = "error" if len(self.errors) == 1 else "errors"
        super().__init__(f"{head}{len(self.errors)} {noun}\n  " + "\n  ".join(self.errors))


class DataError(PipelineError):
    """Price data is missing or malformed (names the file, row and value)."""


class FeatureError(PipelineError):
    """Features could not be built (e.g. a NaN left after warm-up; names the feature)."""


class Stopped(PipelineError):
    """Training stopped on request between two batches. Subclasses say why."""


class Cancelled(Stopped):
    """The job was cancelled: publish nothing."""


class HandedBack(Stopped):
    """The worker was asked to hand the attempt back; a checkpoint was emitted first."""
