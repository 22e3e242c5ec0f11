"""``training_data``: symbols, timeframes, the date range and the history to warm up on.

The section's keys and ``history_required`` are a typed model (:class:`TrainingData`); the
symbol and timeframe specs keep their readers below because each takes KTRDR's two shapes
(``{mode: single, symbol: X}`` or a list) and reports the sub-key that is wrong.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from pipeline.schema.base import Section, validate, whole
from pipeline.schema.check import Check, show, text_list

TIMEFRAME_RE = re.compile(r"^[1-9][0-9]{0,5}(m|h|d|w)$")
# Symbols become file names ({SYMBOL}_{TF}.csv): no path separators, no leading dot.
SYMBOL_RE = re.compile(r"^[A-Za-z0-9_^=][A-Za-z0-9_.^=-]{0,31}$")


class TrainingData(Section):
    symbols: Any = None
    timeframes: Any = None
    history_required: whole(50) = 200  # type: ignore[valid-type]
    start_date: Any = None
    end_date: Any = None
    date_range: Any = None


def read_training_data(
    raw: Mapping, check: Check
) -> tuple[list[str], list[str], str, str | None, str | None, int]:
    """(symbols, timeframes, base timeframe, start, end, history_required)."""
    data = validate(TrainingData, raw.get("training_data"), "training_data", check)
    given = raw.get("training_data") if isinstance(raw.get("training_data"), Mapping) else {}
    symbols: list[str] = []
    timeframes, base = [], ""
    if "training_data" not in raw:  # one error, not one per missing sub-key
        check.error("training_data", "missing; required: symbols and timeframes")
    else:
        symbols = _symbols(given, check)
        timeframes, base = _timeframes(given, check)
    start, end = _dates(given, check)
    return symbols, timeframes, base, start, end, data.history_required


def _symbols(data: Mapping, check: Check) -> list[str]:
    """Both KTRDR modes; ``symbols:`` is an alias of ``list``; a plain list is taken as is."""
    path = "training_data.symbols"
    spec = data.get("symbols")
    if spec is None:
        check.error(
            path,
            "missing; required: {mode: single, symbol: X} or {mode: multi_symbol, list: [X, Y]}",
        )
        return []
    if isinstance(spec, list):
        spec = {"mode": "multi_symbol", "list": spec}
    if not isinstance(spec, Mapping):
        check.error(
            path,
            f"{show(spec)} is not allowed; {{mode: single, symbol: X}} or "
            "{mode: multi_symbol, list: [X, Y]}",
        )
        return []
    listed = spec.get("list", spec.get("symbols"))
    mode = spec.get("mode", "single" if "symbol" in spec else "multi_symbol")
    if mode == "single" and "symbol" in spec:
        symbols = [spec["symbol"]] if isinstance(spec["symbol"], str) else None
        where = f"{path}.symbol"
    elif mode in ("single", "multi_symbol"):
        symbols, where = text_list(listed), f"{path}.list"
        if mode == "single" and symbols and len(symbols) != 1:
            check.error(
                f"{path}.mode",
                f"single with {len(symbols)} symbols; use mode: multi_symbol for several",
            )
    else:
        check.error(f"{path}.mode", f"{show(mode)} is not allowed; allowed: single, multi_symbol")
        return []
    if symbols is None:
        check.error(
            where,
            "missing or not text; required: a symbol name such as EURUSD"
            if where.endswith("symbol")
            else "required: a non-empty list of symbol names",
        )
        return []
    check.unused(spec, ("mode", "symbol", "list", "symbols"), f"{path}.")
    return _unique_names(
        symbols, where, SYMBOL_RE, "letters, digits, _ . - ^ = (it names the data file)", check
    )


def _unique_names(
    names: list[str], path: str, pattern: re.Pattern, rule: str, check: Check
) -> list[str]:
    for value in names:
        if not pattern.match(value):
            check.error(path, f"{value!r} is not allowed; {rule}")
    for value in {v for v in names if names.count(v) > 1}:
        check.error(path, f"{value!r} is listed twice; list each once")
    return names


def _timeframes(data: Mapping, check: Check) -> tuple[list[str], str]:
    """Single or multi mode; the base timeframe defaults to the first of the list."""
    path = "training_data.timeframes"
    spec = data.get("timeframes")
    if isinstance(spec, list):
        spec = {"mode": "multi_timeframe", "list": spec}
    if not isinstance(spec, Mapping):
        check.error(
            path,
            f"{'missing' if spec is None else show(spec)}; required: "
            "{mode: single, timeframe: 1h} or "
            "{mode: multi_timeframe, list: [1h, 4h], base_timeframe: 1h}",
        )
        return [], ""
    mode = spec.get("mode", "single" if "timeframe" in spec else "multi_timeframe")
    if mode not in ("single", "multi_timeframe"):
        check.error(
            f"{path}.mode", f"{show(mode)} is not allowed; allowed: single, multi_timeframe"
        )
        return [], ""
    if mode == "single" and "timeframe" in spec:
        listed = [spec["timeframe"]] if isinstance(spec["timeframe"], str) else None
        where = f"{path}.timeframe"
    else:
        listed, where = text_list(spec.get("list")), f"{path}.list"
        if mode == "single" and listed and len(listed) != 1:
            check.error(
                f"{path}.mode",
                f"single with {len(listed)} timeframes; use mode: multi_timeframe for several",
            )
    if listed is None:
        check.error(
            where,
            "missing or not text; required: "
            + (
                "a timeframe such as 1h"
                if where.endswith("timeframe")
                else "a non-empty list of timeframes such as [1h, 4h]"
            ),
        )
        return [], ""
    check.unused(spec, ("mode", "timeframe", "list", "base_timeframe"), f"{path}.")
    timeframes = _unique_names(
        listed, where, TIMEFRAME_RE, "a number and a unit m, h, d or w (1h, 4h, 1d)", check
    )
    if mode == "single":  # one timeframe is its own base; a stray base_timeframe is moot
        return timeframes, timeframes[0]
    base = spec.get("base_timeframe", timeframes[0])
    if base not in timeframes:
        check.error(
            f"{path}.base_timeframe",
            f"{show(base)} is not in the list; allowed: {', '.join(timeframes)}",
        )
        base = timeframes[0]
    return timeframes, base


def _dates(data: Mapping, check: Check) -> tuple[str | None, str | None]:
    """``start_date``/``end_date``, or KTRDR's other spelling ``date_range: {start, end}``."""
    span = data.get("date_range")
    if span is not None and not isinstance(span, Mapping):
        check.error("training_data.date_range", "must be a mapping {start: ..., end: ...}")
        span = None
    span = span or {}
    parsed = []
    for key, alt in (("start_date", "start"), ("end_date", "end")):
        path, value = f"training_data.{key}", data.get(key)
        if value is None and alt in span:
            path, value = f"training_data.date_range.{alt}", span[alt]
        parsed.append(_date(value, path, check))
    start, end = parsed
    if start and end and start[1] >= end[1]:
        check.error(
            "training_data.end_date",
            f"{end[0]} is not after start_date {start[0]}; the range must not be empty",
        )
    return tuple(p[0] if p else None for p in parsed)  # type: ignore[return-value]


def _date(value: Any, path: str, check: Check) -> tuple[str, dt.datetime] | None:
    """Parse an ISO date or date-time; naive times are UTC like the price data."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        check.error(path, f"{show(value)} is not a date; write YYYY-MM-DD or an ISO date-time")
        return None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return str(value), when
