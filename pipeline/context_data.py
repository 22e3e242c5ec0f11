"""context_data: external series (other symbols, FRED rates, CFTC positioning) beside the prices.

A strategy lists entries under ``context_data``; each gives series under KTRDR's source ids, and
an indicator with ``data_source: <id>`` is computed on that series instead of the symbol's bars:

| provider   | file under the data root        | source ids                                |
|------------|---------------------------------|-------------------------------------------|
| ib         | ``{symbol}_{timeframe}.csv``    | ``{symbol}``                              |
| fred       | ``fred/{SERIES}.csv``           | ``fred_{S}``; ``yield_spread_{S1}_{S2}``  |
| cftc_cot   | ``cot/{REPORT}.csv``            | ``cot_{R}_net_pos``, ``cot_{R}_net_pct``  |

Nothing is downloaded. Every series keeps its own frequency, and each row carries the time it
could first be known: a bar's close for ``ib``, the stamped date plus ``publication_lag`` for FRED
(default 1 day: a day's rate is published the next day) and COT (default 3 days: Tuesday's
positions come out on Friday). KTRDR uses them from the stamped date itself, which trains on
values nobody had yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the collector lives with the schema
    from pipeline.schema.check import Check

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.context_files import cot_path, fred_path, read_cot, read_fred
from pipeline.errors import DataError
from pipeline.market_data import is_timeframe, load_prices, timeframe_delta
from pipeline.schema.keys import did_you_mean

PROVIDERS = ("ib", "fred", "cftc_cot")
# KTRDR's CFTC contract map: the currency codes a COT report may name.
COT_REPORTS = ("EUR", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD", "MXN")
DEFAULT_LAG = {"ib": pd.Timedelta(0), "fred": pd.Timedelta(days=1),
               "cftc_cot": pd.Timedelta(days=3)}
_USED = ("provider", "symbol", "timeframe", "series", "report", "publication_lag", "alignment")
# Keys KTRDR's schema has and no KTRDR provider reads.
_IGNORED = ("instrument_type", "frequency", "currencies", "min_impact", "broker")
_SYMBOL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_SERIES = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class ContextEntry:
    """One checked ``context_data`` entry."""

    index: int
    provider: str
    lag: pd.Timedelta
    symbol: str = ""
    timeframe: str = "1h"
    series: tuple[str, ...] = ()
    report: str = ""

    @property
    def path(self) -> str:
        return f"context_data[{self.index}]"

    def source_ids(self) -> list[str]:
        """KTRDR's ids (``get_source_ids`` of its three providers), in its order."""
        if self.provider == "ib":
            return [self.symbol]
        if self.provider == "fred":
            ids = [f"fred_{s}" for s in self.series]
            return ids + ([f"yield_spread_{self.series[0]}_{self.series[1]}"]
                          if len(self.series) >= 2 else [])
        return [f"cot_{self.report}_net_pos", f"cot_{self.report}_net_pct"]


@dataclass
class ContextSeries:
    """One source id's series at its own frequency, and when each row could first be known."""

    source_id: str
    frame: pd.DataFrame
    available: pd.DatetimeIndex
    origin: str


# --------------------------------------------------------------------------- checking


def parse_context_data(value: Any, check: Check) -> list[ContextEntry]:
    """Check the ``context_data`` list; every problem goes to ``check`` with its key path."""
    if value is None:
        return []
    if not isinstance(value, list):
        check.error("context_data", "must be a list of entries such as "
                    "{provider: fred, series: [DGS2]}")
        return []
    entries = [_entry(i, item, check) for i, item in enumerate(value)]
    found = [e for e in entries if e is not None]
    seen: dict[str, str] = {}
    for entry in found:
        for source_id in entry.source_ids():
            if source_id in seen:
                check.error(entry.path, f"gives source id {source_id!r} again (also given by "
                            f"{seen[source_id]}); list each series once")
            seen[source_id] = entry.path
    return found


def _entry(i: int, item: Any, check: Check) -> ContextEntry | None:
    path = f"context_data[{i}]"
    if not isinstance(item, Mapping):
        check.error(path, f"must be a mapping such as {{provider: fred, series: [DGS2]}}, "
                    f"got {item!r}")
        return None
    for key in item:
        if key in _IGNORED:
            check.warn(f"{path}.{key}", "ignored (KTRDR ignores it too)")
        elif key not in _USED and did_you_mean(str(key), _USED):
            check.error(f"{path}.{key}", str(did_you_mean(str(key), _USED)))
        elif key not in _USED:
            check.warn(f"{path}.{key}", f"unknown key, ignored; known: {', '.join(_USED)}")
    if item.get("alignment", "forward_fill") != "forward_fill":
        check.warn(f"{path}.alignment", f"{item['alignment']!r} is ignored: a context series "
                   "is always carried forward from when it was published")
    provider = item.get("provider")
    if provider not in PROVIDERS:
        what = "missing" if provider is None else f"{provider!r} is not a provider"
        check.error(f"{path}.provider", f"{what}; allowed: {', '.join(PROVIDERS)}")
        return None
    lag = _lag(item.get("publication_lag"), provider, f"{path}.publication_lag", check)
    if provider == "ib":
        symbol, timeframe = item.get("symbol"), item.get("timeframe", "1h")
        ok = True
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
            check.error(f"{path}.symbol", f"{symbol!r}; required for ib: a symbol such as "
                        "GBPUSD (letters, digits, _ . -), read from {symbol}_{timeframe}.csv")
            ok = False
        if not is_timeframe(timeframe):
            check.error(f"{path}.timeframe", f"{timeframe!r} is not allowed; a number and a "
                        "unit m, h, d or w (1h, 1d)")
            ok = False
        return ContextEntry(i, provider, lag, symbol=symbol, timeframe=timeframe) if ok else None
    if provider == "fred":
        series = item.get("series")
        listed = [series] if isinstance(series, str) else series
        if (not isinstance(listed, list) or not listed
                or not all(isinstance(s, str) and _SERIES.match(s) for s in listed)):
            check.error(f"{path}.series", f"{series!r}; required for fred: a FRED series id or a "
                        "list of them, such as [DGS2, IRLTLT01DEM156N] (letters, digits, _)")
            return None
        return ContextEntry(i, provider, lag, series=tuple(listed))
    report = item.get("report")
    if report not in COT_REPORTS:
        what = "missing" if report is None else f"{report!r} is not a report"
        check.error(f"{path}.report", f"{what}; allowed: {', '.join(COT_REPORTS)}")
        return None
    return ContextEntry(i, provider, lag, report=report)


def _lag(value: Any, provider: str, path: str, check: Check) -> pd.Timedelta:
    """Whole days (an int >= 0) or a duration such as 36h; absent is the provider's default."""
    if value is None:
        return DEFAULT_LAG[provider]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return pd.Timedelta(days=value)
    if is_timeframe(value):
        return timeframe_delta(value)
    check.error(path, f"{value!r} is not allowed; whole days (0, 1, 3) or a duration such as "
                "12h or 2d")
    return DEFAULT_LAG[provider]


def check_data_sources(indicators: Mapping, entries: list[ContextEntry],
                       check: Check) -> dict[str, str]:
    """indicator id -> source id, for each indicator with a ``data_source`` that exists."""
    available = [sid for entry in entries for sid in entry.source_ids()]
    used: dict[str, str] = {}
    for ind_id, body in indicators.items():
        if not isinstance(body, Mapping) or "data_source" not in body:
            continue
        source = body["data_source"]
        if source in available:
            used[ind_id] = source
        elif available:
            check.error(f"indicators.{ind_id}.data_source", f"{source!r} is not a context "
                        f"source; context_data gives: {', '.join(available)}")
        else:
            check.error(f"indicators.{ind_id}.data_source", f"{source!r}: no context_data "
                        "entry gives it; add one, e.g. {provider: ib, symbol: GBPUSD} for "
                        "data_source: GBPUSD")
    for entry in entries:
        if not set(entry.source_ids()) & set(used.values()):
            check.warn(entry.path, f"no indicator reads {', '.join(entry.source_ids())} "
                       "(data_source); it is not loaded")
    return used


# --------------------------------------------------------------------------- loading


def load_context(entries: list[ContextEntry], data_root: Path,
                 wanted: set[str] | None = None) -> dict[str, ContextSeries]:
    """Every source id's series from its file under ``data_root`` (only ``wanted`` ids if given).

    A missing file is a DataError naming the file to add and its columns.
    """
    out: dict[str, ContextSeries] = {}
    for entry in entries:
        if wanted is not None and not set(entry.source_ids()) & wanted:
            continue
        try:
            for series in _load_entry(entry, Path(data_root)):
                out[series.source_id] = series
        except DataError as exc:
            raise DataError(f"{entry.path} ({entry.provider}): {exc}") from exc
    return out


def _load_entry(entry: ContextEntry, root: Path) -> list[ContextSeries]:
    if entry.provider == "ib":
        try:
            bars = load_prices(root, entry.symbol, entry.timeframe)
        except DataError as exc:
            raise DataError(f"{exc} (a price file: a time column, open, high, low, close and "
                            "optional volume)") from exc
        available = bars.index + timeframe_delta(entry.timeframe) + entry.lag
        return [ContextSeries(entry.symbol, bars, available, bars.attrs["source"])]
    if entry.provider == "fred":
        paths = [fred_path(root, s) for s in entry.series]
        values = [read_fred(p, s) for p, s in zip(paths, entry.series, strict=True)]
        found = [_dated(f"fred_{s}", v, entry.lag, str(p))
                 for s, v, p in zip(entry.series, values, paths, strict=True)]
        if len(values) >= 2:
            # KTRDR's spread: the dates both series have, first minus second.
            a, b = values[0].align(values[1], join="inner")
            sid = f"yield_spread_{entry.series[0]}_{entry.series[1]}"
            found.append(_dated(sid, a - b, entry.lag, f"{paths[0]} - {paths[1]}"))
        return found
    path = cot_path(root, entry.report)
    net = read_cot(path)
    pct52, pct156 = cot_percentile(net.to_numpy(), 52), cot_percentile(net.to_numpy(), 156)
    pct = pd.DataFrame({"close": pct52, "net_pct_156w": pct156}, index=net.index)
    pct = pct[~np.isnan(pct52)]
    return [_dated(f"cot_{entry.report}_net_pos", net, entry.lag, str(path)),
            ContextSeries(f"cot_{entry.report}_net_pct", pct, pct.index + entry.lag, str(path))]


def _dated(source_id: str, values: pd.Series, lag: pd.Timedelta, origin: str) -> ContextSeries:
    frame = pd.DataFrame({"close": values.to_numpy(np.float64)}, index=values.index)
    return ContextSeries(source_id, frame, frame.index + lag, origin)


def cot_percentile(values: np.ndarray, window: int) -> np.ndarray:
    """KTRDR's rolling rank: 100 x (earlier values in the window below the latest)/(window - 1).

    The first ``window - 1`` reports have no full window and are NaN.
    """
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        windows = sliding_window_view(np.asarray(values, dtype=np.float64), window)
        below = (windows[:, :-1] < windows[:, -1:]).sum(axis=1)
        out[window - 1:] = below / (window - 1) * 100.0
    return out
