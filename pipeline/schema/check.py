"""The error collector every section's check writes to, so one pass reports all of a file.

Messages read ``key.path: what is wrong; what is allowed``. An unknown key is an error with
"did you mean" when it is a near miss of a key the section takes (pipeline.schema.keys), and a
warning otherwise; :meth:`Check.finish` turns every warning into an error in strict mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.schema.keys import did_you_mean

IGNORED = "ignored (not used by this trainer)"
IGNORED_HINTS = {
    "model.training": "ignored (not used by this trainer; it reads the top-level training section)",
    "model.features": "ignored (not used by this trainer; features come from nn_inputs)",
}
STRICT = "; --strict refuses warnings"


class Check:
    """Collects errors and warnings so one pass reports everything wrong with a file."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    def finish(self) -> None:
        """Strict mode: every warning becomes an error (the warnings list is then empty)."""
        if self.strict and self.warnings:
            self.errors.extend(w + STRICT for w in self.warnings)
            self.warnings = []

    def section(self, parent: Mapping, key: str, path: str) -> dict:
        """The mapping at ``parent[key]``; absent or null is ``{}``, anything else an error."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(path, f"must be a mapping, got {show(value)}")
            return {}
        return dict(value)

    def unknown(self, key: str, known: Iterable[str], path: str, warning: str) -> None:
        """One key the section does not take: a typo error if near ``known``, else ``warning``."""
        typo = did_you_mean(key, known)
        if typo is not None:
            self.error(path, typo)
        else:
            self.warn(path, warning)

    def unused(self, mapping: Mapping, known: tuple[str, ...], prefix: str) -> None:
        """Report each key this trainer does not read (they are still kept in ``raw``)."""
        for key in mapping:
            if key not in known:
                path = f"{prefix}{key}"
                self.unknown(str(key), known, path, IGNORED_HINTS.get(path, IGNORED))

    def integer(self, mapping: Mapping, key: str, path: str, default: int, minimum: int) -> int:
        value = mapping.get(key, default)
        if value is None:
            return default
        if not is_int(value) or value < minimum:
            self.error(path, f"{show(value)} is not allowed; a whole number >= {minimum}")
            return default
        return int(value)

    def number(
        self, mapping: Mapping, key: str, path: str, default: float, allowed: str, ok: Any
    ) -> float:
        """A float (an int is fine) for which ``ok(value)`` holds; ``allowed`` says the range."""
        value = mapping.get(key, default)
        if value is None:
            return default
        if not is_number(value) or not ok(value):
            self.error(path, f"{show(value)} is not allowed; a number {allowed}")
            return default
        return float(value)

    def choice(self, mapping: Mapping, key: str, path: str, default: str, allowed: tuple) -> str:
        value = mapping.get(key, default)
        if value is None:
            return default
        text = value.lower() if isinstance(value, str) else value
        if text not in allowed:
            self.error(path, f"{show(value)} is not allowed; allowed: {', '.join(allowed)}")
            return default
        return text


def is_int(value: Any) -> bool:
    """True for ints; a YAML ``true`` is a bool, which Python counts as an int, and is refused."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def show(value: Any) -> str:
    """Quote a user's value the way they would recognise it in their file."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a true/false)"
    return repr(value) if isinstance(value, str) else str(value)


def text_list(value: Any) -> list | None:
    """A non-empty list of non-empty strings, or None."""
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None
