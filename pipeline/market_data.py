"""Price data: read OHLCV files as users have them, resample, align timeframes without look-ahead.

A data root holds one file per symbol and timeframe, ``{SYMBOL}_{TIMEFRAME}.csv`` or ``.parquet``.
Every reader returns the same shape, so nothing downstream cares where bars came from: a
``DatetimeIndex`` named ``timestamp`` in UTC (nanosecond unit), float64 columns exactly
``open, high, low, close, volume``, sorted, one row per timestamp.

A bar is labelled by its START and becomes usable only when it has CLOSED (start + timeframe).
Both resampling and multi-timeframe alignment follow from that one rule.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError

COLUMNS = ["open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]

# Any whole number of minutes, hours, days or weeks, as KTRDR writes them (5m, 1h, 4h, 1d, 1w).
_TIMEFRAME = re.compile(r"(?P<count>[1-9][0-9]{0,5})(?P<unit>[mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# Names accepted for the time column, in order of preference (compared lower-cased).
_TIME_NAMES = ("timestamp", "datetime", "date", "time")
# Date formats tried in order; ISO first because it is unambiguous. M/D/YYYY is the US export
# layout (Yahoo, the arch package); D/M/YYYY is deliberately not guessed.
_DATE_FORMATS = ("ISO8601", "%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")
_NAME_PART = re.compile(r"[A-Za-z0-9_.-]+")
_FILE_NAME = re.compile(r"(?P<symbol>[A-Za-z0-9_.-]+)_(?P<timeframe>[0-9]+[a-z])\.(?:csv|parquet)")
_SUFFIXES = (".csv", ".parquet")
# Weekly buckets start on Monday 00:00 UTC; the Unix epoch was a Thursday.
_WEEK_ORIGIN = pd.Timestamp("1970-01-05", tz="UTC")


def default_data_root() -> Path:
    """The bundled sample files, found as package data so an installed project needs no set-up."""
    return Path(str(resources.files("pipeline").joinpath("sample_data")))


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    """Length of one bar of any ``Nm``, ``Nh``, ``Nd`` or ``Nw`` timeframe.

    Anything else fails here, so a typo never reaches a resample rule or a file name.
    """
    match = _TIMEFRAME.fullmatch(timeframe) if isinstance(timeframe, str) else None
    if match is None:
        raise DataError(
            f"unknown timeframe {timeframe!r}; write a whole number and a unit m, h, d or w "
            "(5m, 1h, 4h, 1d, 1w)"
        )
    return pd.Timedelta(**{_UNITS[match["unit"]]: int(match["count"])})


def is_timeframe(text: object) -> bool:
    """True for a timeframe :func:`timeframe_delta` accepts."""
    return isinstance(text, str) and _TIMEFRAME.fullmatch(text) is not None


# ---------------------------------------------------------------------------------------------
# Reading one file
# ---------------------------------------------------------------------------------------------


def read_price_file(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet price file into the standard OHLCV shape, rejecting bad rows.

    Row numbers in messages are 1-based lines of the CSV file (the header is line 1), or 1-based
    rows of a Parquet file, so a user can open the file and go straight to the problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            # Blank lines are kept (then dropped below) so that position + 2 is the file line.
            raw = pd.read_csv(path, skip_blank_lines=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: cannot read as CSV ({exc})") from exc
        if len(raw.columns) and _is_unnamed(str(raw.columns[0])):
            # An unnamed first column is the saved index: the times, unless a named time column
            # exists, in which case it is a row counter (``df.reset_index().to_csv()``).
            named = {str(c).strip().lower() for c in raw.columns[1:]}
            if named & set(_TIME_NAMES):
                raw = raw.drop(columns=raw.columns[0])
            else:
                raw = raw.rename(columns={raw.columns[0]: "timestamp"})
        where = ("line", np.arange(len(raw)) + 2)
    elif suffix == ".parquet":
        try:
            raw = pd.read_parquet(path)
        except (OSError, ValueError, ImportError) as exc:
            raise DataError(f"{path}: cannot read as Parquet ({exc})") from exc
        if isinstance(raw.index, pd.DatetimeIndex) or str(raw.index.name).lower() in _TIME_NAMES:
            raw = raw.reset_index(names=raw.index.name or "timestamp")
        else:
            raw = raw.reset_index(drop=True)
        where = ("row", np.arange(len(raw)) + 1)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    return _standardize(raw, path, *where)


def _is_unnamed(name: str) -> bool:
    """pandas names a header-less first column 'Unnamed: 0'; a saved index is often 'index'."""
    return name.strip() == "" or name.startswith("Unnamed:") or name.strip().lower() == "index"


def _standardize(raw: pd.DataFrame, path: Path, unit: str, numbers: np.ndarray) -> pd.DataFrame:
    """Turn a raw table into the standard shape; ``numbers`` holds each row's line/row number."""
    keep = ~raw.isna().all(axis=1).to_numpy()
    raw, numbers = raw.loc[keep].reset_index(drop=True), numbers[keep]
    if raw.empty:
        raise DataError(f"{path}: the file has no data rows; add OHLCV rows below the header")

    lower = [str(c).strip().lower() for c in raw.columns]
    seen = {name for name in lower if lower.count(name) > 1}
    if seen:
        raise DataError(f"{path}: columns {sorted(seen)} appear more than once (names ignore case)")
    raw.columns = lower
    time_col = next((name for name in _TIME_NAMES if name in lower), None)
    missing = [c for c in PRICE_COLUMNS if c not in lower]
    if time_col is None or missing:
        need = ([] if time_col else ["a time column (date, timestamp, time or datetime)"]) + missing
        raise DataError(
            f"{path}: missing {', '.join(need)}; found columns {list(raw.columns)}. "
            "Expected a time column (or an unnamed first index column) and open, high, low, close"
            " (volume optional)."
        )

    stamps = _parse_times(raw[time_col], path, unit, numbers)
    data = {c: _parse_numbers(raw, c, path, unit, numbers) for c in PRICE_COLUMNS}
    if "volume" in lower:
        # Volume is often blank for FX and indices; a blank cell means "not reported", i.e. 0.
        data["volume"] = np.nan_to_num(_parse_numbers(raw, "volume", path, unit, numbers, True))
    else:
        data["volume"] = np.zeros(len(raw))
    _check_prices(data, path, unit, numbers)

    frame = pd.DataFrame(data, index=pd.DatetimeIndex(stamps, name="timestamp"))
    order = np.argsort(frame.index.asi8, kind="stable")
    frame, numbers = frame.iloc[order], numbers[order]
    return _drop_duplicates(frame, path, unit, numbers)


def _parse_times(column: pd.Series, path: Path, unit: str, numbers: np.ndarray) -> pd.DatetimeIndex:
    """Parse with the first format that reads every row; naive times are UTC, aware converted."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return pd.DatetimeIndex(column).tz_convert("UTC").as_unit("ns")
    if pd.api.types.is_datetime64_dtype(column.dtype):
        return pd.DatetimeIndex(column).tz_localize("UTC").as_unit("ns")
    text = column.astype("string").str.strip()
    best: pd.Series | None = None
    for fmt in _DATE_FORMATS:
        parsed = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
        if not parsed.isna().any():
            return pd.DatetimeIndex(parsed).as_unit("ns")
        if best is None or parsed.isna().sum() < best.isna().sum():
            best = parsed
    assert best is not None
    bad = int(np.flatnonzero(best.isna().to_numpy())[0])
    raise DataError(
        f"{path}: {unit} {numbers[bad]}: cannot read time {column.iloc[bad]!r}; "
        "use ISO dates (2018-01-31 or 2018-01-31 14:00:00, optionally with +00:00) or M/D/YYYY"
    )


def _parse_numbers(
    raw: pd.DataFrame, name: str, path: Path, unit: str, numbers: np.ndarray, blank_ok: bool = False
) -> np.ndarray:
    """Column as float64; text that is not a number (or a blank price) names its row."""
    values = pd.to_numeric(raw[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & (raw[name].notna().to_numpy() | (not blank_ok))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {unit} {numbers[i]}: {name} is {raw[name].iloc[i]!r}, not a number; "
            "fix or remove that row"
        )
    return values


def _check_prices(data: dict[str, np.ndarray], path: Path, unit: str, numbers: np.ndarray) -> None:
    """Reject what the spec rejects: non-positive (or infinite) prices and high < low."""
    for name in PRICE_COLUMNS:
        bad = ~(np.isfinite(data[name]) & (data[name] > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: {unit} {numbers[i]}: {name} is {float(data[name][i])!r}; prices must be "
                "positive and finite. Fix or remove that row."
            )
    bad = data["high"] < data["low"]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {unit} {numbers[i]}: high {float(data['high'][i])!r} is below low "
            f"{float(data['low'][i])!r}; fix or remove that row (are the columns swapped?)"
        )


def _drop_duplicates(
    frame: pd.DataFrame, path: Path, unit: str, numbers: np.ndarray
) -> pd.DataFrame:
    """Drop exact repeats (a re-exported overlap); two different bars at one time are an error."""
    exact = frame.reset_index().duplicated().to_numpy()
    frame, numbers = frame[~exact], numbers[~exact]
    clash = frame.index.duplicated(keep="first")
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        first = int(np.flatnonzero(frame.index == frame.index[i])[0])
        raise DataError(
            f"{path}: {unit}s {numbers[first]} and {numbers[i]} both have time {frame.index[i]} "
            "with different values; keep one of them"
        )
    return frame


# ---------------------------------------------------------------------------------------------
# Finding files in a data root
# ---------------------------------------------------------------------------------------------


def list_price_files(data_root: Path) -> list[tuple[str, str, Path]]:
    """Each ``{SYMBOL}_{TIMEFRAME}`` file of a known timeframe, sorted, as (symbol, tf, path)."""
    root = Path(data_root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _FILE_NAME.fullmatch(path.name)
        if match and is_timeframe(match["timeframe"]) and path.is_file():
            found.append((match["symbol"], match["timeframe"], path))
    return sorted(found, key=lambda item: (item[0], timeframe_delta(item[1]), item[2].name))


def find_price_file(data_root: Path, symbol: str, timeframe: str) -> Path | None:
    """The file for one symbol and timeframe, or None; names come from user YAML: no path tricks."""
    for label, value in (("symbol", symbol), ("timeframe", timeframe)):
        if not isinstance(value, str) or not _NAME_PART.fullmatch(value):
            raise DataError(f"{label} {value!r} may only contain letters, digits, '_', '.' and '-'")
    root = Path(data_root).resolve()
    hits = [
        Path(data_root) / f"{symbol}_{timeframe}{suffix}"
        for suffix in _SUFFIXES
        if (Path(data_root) / f"{symbol}_{timeframe}{suffix}").exists()
    ]
    for hit in hits:
        if not hit.resolve().is_relative_to(root):
            raise DataError(
                f"{hit} escapes the data root {root} (it links to {hit.resolve()}); "
                "copy the file into the data root instead"
            )
    if len(hits) > 1:
        raise DataError(
            f"both {hits[0].name} and {hits[1].name} exist in {root}; remove one so the data "
            "used is never a guess"
        )
    return hits[0] if hits else None


# ---------------------------------------------------------------------------------------------
# Loading, resampling, aligning
# ---------------------------------------------------------------------------------------------


def load_prices(
    data_root: Path,
    symbol: str,
    timeframe: str,
    start: str | date | datetime | None = None,
    end: str | date | datetime | None = None,
) -> pd.DataFrame:
    """Bars of one symbol and timeframe, resampled from a finer file if needed, within [start, end].

    ``start`` and ``end`` are inclusive and compare with bar starts; an ``end`` given as a date
    (no time of day) means through the end of that day. The source file is kept in ``attrs``.
    """
    target = timeframe_delta(timeframe)
    path = find_price_file(data_root, symbol, timeframe)
    if path is not None:
        bars = read_price_file(path)
    else:
        source_tf, path = _finer_source(data_root, symbol, timeframe, target)
        bars = resample_bars(read_price_file(path), timeframe, source_timeframe=source_tf)
    bars = _filter_range(bars, path, start, end)
    bars.attrs["source"] = str(path)
    return bars


def _finer_source(
    data_root: Path, symbol: str, timeframe: str, target: pd.Timedelta
) -> tuple[str, Path]:
    """The finest file of the symbol dividing the target evenly, else a DataError naming what is."""
    files = list_price_files(data_root)
    own = [(tf, path) for sym, tf, path in files if sym == symbol]
    usable = [(tf, p) for tf, p in own if _divides(timeframe_delta(tf), target)]
    if usable:
        tf, path = usable[0]  # list_price_files sorts finest first
        find_price_file(data_root, symbol, tf)  # same root-escape check as a direct hit
        return tf, path
    if own:
        have = ", ".join(tf for tf, _ in own)
        raise DataError(
            f"no {timeframe} data for {symbol} in {data_root}: {symbol} has only {have}, and a "
            f"{timeframe} bar can only be built from a finer timeframe. "
            f"Add {symbol}_{timeframe}.csv"
        )
    symbols = sorted({sym for sym, _, _ in files})
    have = ", ".join(symbols) if symbols else "none"
    raise DataError(
        f"no price file for {symbol} in {data_root}; symbols there: {have}. "
        f"Add {symbol}_{timeframe}.csv (or .parquet)"
    )


def _filter_range(
    bars: pd.DataFrame, path: Path, start: object | None, end: object | None
) -> pd.DataFrame:
    """Keep bars whose start lies in [start, end]; a date-only end covers that whole day."""
    lo = _to_utc(start, "start") if start is not None else None
    hi = _to_utc(end, "end") if end is not None else None
    if hi is not None and _is_date_only(end):
        hi = hi + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    if lo is not None and hi is not None and lo > hi:
        raise DataError(f"start {start} is after end {end}; swap them")
    keep = np.ones(len(bars), dtype=bool)
    if lo is not None:
        keep &= bars.index >= lo
    if hi is not None:
        keep &= bars.index <= hi
    out = bars[keep]
    if out.empty:
        span = f"{bars.index[0]} .. {bars.index[-1]}" if len(bars) else "no bars"
        raise DataError(
            f"{path}: no bars between {start} and {end}; the data covers {span}. "
            "Widen the date range."
        )
    return out


def _to_utc(value: object, label: str) -> pd.Timestamp:
    """A date, datetime or string as a UTC timestamp; naive means UTC, like the data files."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{label} date {value!r} is not a date; use YYYY-MM-DD") from exc
    if pd.isna(stamp):
        raise DataError(f"{label} date {value!r} is not a date; use YYYY-MM-DD")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _is_date_only(value: object) -> bool:
    """True for a ``date`` or a string with no time of day (e.g. '2018-01-31')."""
    if isinstance(value, datetime):
        return False
    if isinstance(value, date):
        return True
    return isinstance(value, str) and ":" not in value and "T" not in value.upper()


def _divides(source: pd.Timedelta, target: pd.Timedelta) -> bool:
    """A finer bar length that fits a whole number of times into the target one."""
    return pd.Timedelta(0) < source < target and target % source == pd.Timedelta(0)


def resample_bars(
    bars: pd.DataFrame, timeframe: str, source_timeframe: str | None = None
) -> pd.DataFrame:
    """Aggregate bars to a coarser timeframe: open first, high max, low min, close last, volume sum.

    Buckets are labelled by their start, aligned to the Unix epoch (so 4h bars start at 00, 04,
    08 UTC; weekly bars on Mondays); empty buckets are dropped. The LAST bucket is kept only if
    its last source bar closes exactly at the bucket's end: an unfinished bar must never be used.
    With session data (no bars up to midnight) that conservatively drops the final bar.
    ``source_timeframe`` defaults to the smallest gap between consecutive bars.
    """
    target = timeframe_delta(timeframe)
    if source_timeframe is not None:
        source = timeframe_delta(source_timeframe)
    elif len(bars) > 1:
        source = (bars.index[1:] - bars.index[:-1]).min()
    else:
        raise DataError("cannot infer the bar length of a single bar; pass source_timeframe")
    if not _divides(source, target):
        raise DataError(
            f"cannot build {timeframe} bars from {source} bars; the target must be a whole "
            "multiple of a finer timeframe"
        )
    origin = _WEEK_ORIGIN if timeframe.endswith("w") else "epoch"
    grouped = bars.resample(target, label="left", closed="left", origin=origin)
    out = grouped.agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    out = out[grouped["close"].count() > 0].astype(np.float64)
    if len(out) and bars.index[-1] + source < out.index[-1] + target:
        out = out.iloc[:-1]
    out.index = out.index.as_unit("ns").rename("timestamp")
    return out[COLUMNS]


def align_to_base(
    base_index: pd.DatetimeIndex,
    base_timeframe: str,
    frame: pd.DataFrame,
    frame_timeframe: str,
) -> pd.DataFrame:
    """Rows of another timeframe's ``frame`` as a base bar could see them, on ``base_index``.

    Each base bar (start t, closes t + base) gets the last frame row (start s) that closed by then,
    s + frame <= t + base, carried forward until the next one closes; earlier rows are NaN. The
    rule is the same whether the other timeframe is coarser (4h in a 1h strategy) or finer (5m:
    the base bar sees the 5m bar that closed with it). KTRDR joins on equal timestamps instead,
    which lets a 00:00 hourly row see that day's close.
    """
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index()
    available = pd.DatetimeIndex(frame.index) + timeframe_delta(frame_timeframe)
    return align_available(base_index, base_timeframe, frame, available)


def align_available(
    base_index: pd.DatetimeIndex,
    base_timeframe: str,
    frame: pd.DataFrame,
    available: pd.DatetimeIndex,
) -> pd.DataFrame:
    """Rows of ``frame`` on ``base_index``: each base bar gets the last row available by its close.

    ``available[i]`` is when row i could first be known (a bar's close, or a published series'
    date plus its publication lag), sorted ascending. A row available exactly at a base bar's
    close is seen by that bar, as a decision taken at the close could read it.
    """
    base_close = pd.DatetimeIndex(base_index) + timeframe_delta(base_timeframe)
    if len(frame) == 0:
        return pd.DataFrame(np.nan, index=base_index, columns=frame.columns)
    pos = pd.DatetimeIndex(available).searchsorted(base_close, side="right") - 1
    out = frame.iloc[np.maximum(pos, 0)].set_axis(base_index, axis=0)
    unseen = np.broadcast_to((pos < 0)[:, None], out.shape)
    return out.mask(unseen)
