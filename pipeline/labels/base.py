"""What every label source declares: its parameters, its classes, and what labelling returns.

A label source is one module that builds a :class:`LabelSource`; the registry in
``pipeline.labels`` maps ``training.labels.source`` to it. Keeping parameters as data (name,
default, kind, bound, KTRDR's aliases) lets the strategy loader validate every source the same
way and report all bad keys at once, with their key paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.schema.check import is_int, is_number, show
from pipeline.schema.keys import did_you_mean

REGRESSION = "regression"


@dataclass(frozen=True)
class Param:
    """One key under ``training.labels``.

    ``kind`` is "int" (a whole number, never a bool or float), "float" (an int is fine),
    "bool", "choice" (one of ``choices``) or "number?" (a number or nothing). ``ok`` is the
    bound a valid value satisfies and ``allowed`` says it in words for the error message.
    """

    name: str
    default: Any
    kind: str
    allowed: str = ""
    ok: Callable[[Any], bool] = lambda _value: True
    choices: tuple[str, ...] = ()


@dataclass
class LabelResult:
    """Labels for every bar of the base timeframe, and which bars have one.

    ``values`` has one entry per bar: int64 classes (-1 where ``valid`` is false, so a misuse
    fails loudly) or float64 returns (NaN where not valid). ``weights`` are per-bar sample
    weights (triple barrier ``compute_weights``), ``hold`` the bars each label needed.
    ``info`` holds counts worth a log line (CUSUM events, barrier outcomes).
    """

    values: np.ndarray
    valid: np.ndarray
    weights: np.ndarray | None = None
    hold: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelSource:
    """A registered label source.

    ``classes`` names the classes in index order; empty means a regression target.
    ``aliases`` maps keys KTRDR's files write but KTRDR never reads to the key we read them as.
    ``ignored`` are keys KTRDR accepts without effect: accepted here too, with a warning.
    ``split`` is "chronological" or "purged" (purged needs ``purge_bars(params)``).
    ``output_type`` is KTRDR's metadata ``output_type`` for models of this source.
    """

    name: str
    params: tuple[Param, ...]
    label: Callable[[pd.DataFrame, Mapping[str, Any]], LabelResult]
    classes: tuple[str, ...]
    output_type: str
    describe: Callable[[Mapping[str, Any]], str]
    aliases: Mapping[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    split: str = "chronological"
    purge_bars: Callable[[Mapping[str, Any]], int] | None = None

    @property
    def num_classes(self) -> int | str:
        """The number of classes, or ``"regression"``."""
        return len(self.classes) if self.classes else REGRESSION

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


@dataclass
class ResolvedParams:
    """A source's parameters after validation: values, plus every error and warning found."""

    values: dict[str, Any]
    errors: list[str]
    warnings: list[str]


def resolve_params(source: LabelSource, given: Mapping[str, Any], prefix: str) -> ResolvedParams:
    """Check ``given`` (the ``training.labels`` mapping, ``source`` key included) against
    ``source``'s parameters. Aliases are read as their target with a warning; unknown keys warn.

    ``prefix`` is the key path of the mapping (``"training.labels."``) for the messages.
    """
    values = source.defaults
    errors: list[str] = []
    warnings: list[str] = []
    by_name = {p.name: p for p in source.params}
    for key, value in given.items():
        if key == "source":
            continue
        shown = key
        target = source.aliases.get(key)
        if target is not None:
            if target in given:
                errors.append(f"{prefix}{key}: given with {target}, which it is read as; keep one")
                continue
            warnings.append(f"{prefix}{key}: read as {target} (KTRDR ignores this key and "
                            f"trains with {target} = {by_name[target].default})")
            key = target
        param = by_name.get(key)
        typo = None if param is not None or key in source.ignored else did_you_mean(
            key, [*by_name, *source.aliases, "source"])
        if typo is not None:
            errors.append(f"{prefix}{key}: {typo}")
            continue
        if param is None:
            note = ("accepted; it has no effect (KTRDR ignores it too)" if key in source.ignored
                    else f"ignored (not a {source.name} label parameter)")
            warnings.append(f"{prefix}{key}: {note}")
            continue
        checked, message = _check(param, value)
        if message:
            errors.append(f"{prefix}{shown}: {message}")
        else:
            values[param.name] = checked
    return ResolvedParams(values, errors, warnings)


def _check(param: Param, value: Any) -> tuple[Any, str]:
    """``(value, "")`` when valid, else ``(None, message)``."""
    if value is None and param.kind == "number?":
        return None, ""
    if param.kind == "bool":
        return (value, "") if isinstance(value, bool) else (None, f"{show(value)} is not "
                                                                   "allowed; true or false")
    if param.kind == "choice":
        text = value.lower() if isinstance(value, str) else value
        if text in param.choices:
            return text, ""
        return None, f"{show(value)} is not allowed; allowed: {', '.join(param.choices)}"
    if param.kind == "int":
        if is_int(value) and param.ok(value):
            return int(value), ""
        return None, f"{show(value)} is not allowed; a whole number {param.allowed}".rstrip()
    if is_number(value) and param.ok(value):
        return float(value), ""
    return None, f"{show(value)} is not allowed; a number {param.allowed}".rstrip()


def classes_from(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """int64 classes with -1 where there is no label (a misuse then fails loudly)."""
    out = np.full(len(values), -1, dtype=np.int64)
    out[valid] = values[valid].astype(np.int64)
    return out
