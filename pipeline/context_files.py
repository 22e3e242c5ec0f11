"""Read the files that hold context series (FRED, CFTC COT) from under the data root.

Nothing is downloaded: a user puts the files there. These readers accept what users have:
our plain ``date,value`` layout, FRED's own CSV download (``observation_date`` and the series id
as headers, "." for a missing value) and KTRDR's FRED cache (``date`` index, ``close``); for COT,
``date,net_position``. Each returns a float Series on a sorted, unique, UTC midnight-or-later
``DatetimeIndex``. The data root is a trust boundary (the spool names strategies, strategies
name files): a path that resolves outside it is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError

FRED_DIR = "fred"
COT_DIR = "cot"
FRED_COLUMNS = "date,value"
COT_COLUMNS = "date,net_position"
_DATE_NAMES = ("date", "observation_date", "timestamp")


def fred_path(data_root: Path, series: str) -> Path:
    """Where a FRED series lives: ``fred/{SERIES}.csv`` under the data root."""
    return confined(data_root, Path(FRED_DIR) / f"{series}.csv")


def cot_path(data_root: Path, report: str) -> Path:
    """Where a COT report lives: ``cot/{REPORT}.csv`` under the data root."""
    return confined(data_root, Path(COT_DIR) / f"{report}.csv")


def confined(data_root: Path, relative: Path) -> Path:
    """``data_root / relative``, refused if it (or a link on the way) leads outside the root."""
    root = Path(data_root).resolve()
    path = Path(data_root) / relative
    if not path.resolve().is_relative_to(root):
        raise DataError(
            f"{path} escapes the data root {root} (it resolves to {path.resolve()}); "
            "copy the file into the data root instead"
        )
    return path


def read_fred(path: Path, series: str) -> pd.Series:
    """One FRED series; "." or blank is missing and takes the previous value (as KTRDR does)."""
    raw = _read_csv(path, f"{FRED_COLUMNS} (or FRED's download: observation_date,{series})")
    names = {c.strip().lower(): c for c in raw.columns}
    value = next((names[n] for n in ("value", series.lower(), "close") if n in names), None)
    if value is None:
        raise _columns_error(path, raw, f"{FRED_COLUMNS} (or observation_date,{series})")
    text = raw[value].astype("string").str.strip()
    missing = text.isna() | (text == "") | (text == ".")
    values = pd.to_numeric(text.mask(missing), errors="coerce")
    bad = values.isna() & ~missing
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: line {line + 2}: value {raw[value].iloc[line]!r} is not a "
                        "number; write a number, or '.' for a missing observation")
    out = pd.Series(values.to_numpy(np.float64), index=_dates(raw, path), name=series)
    return _unique(out, path).ffill().dropna()


def read_cot(path: Path) -> pd.Series:
    """A COT report's net position (leveraged funds long minus short) by report date."""
    raw = _read_csv(path, COT_COLUMNS)
    names = {c.strip().lower(): c for c in raw.columns}
    if "net_position" not in names:
        raise _columns_error(path, raw, COT_COLUMNS)
    column = raw[names["net_position"]]
    values = pd.to_numeric(column, errors="coerce")
    if values.isna().any():
        line = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{path}: line {line + 2}: net_position {column.iloc[line]!r} is not a "
                        "number; fix or remove that row")
    out = pd.Series(values.to_numpy(np.float64), index=_dates(raw, path), name="net_position")
    return _unique(out, path)


def _read_csv(path: Path, columns: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"missing file {path}; add it as a CSV with columns {columns}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc}); expected columns {columns}") from exc
    if raw.empty:
        raise DataError(f"{path}: the file has no data rows; add rows with columns {columns}")
    return raw


def _columns_error(path: Path, raw: pd.DataFrame, columns: str) -> DataError:
    return DataError(f"{path}: found columns {list(raw.columns)}; expected {columns}")


def _dates(raw: pd.DataFrame, path: Path) -> pd.DatetimeIndex:
    """The date column (or an unnamed first column: a saved index), as UTC timestamps."""
    names = {c.strip().lower(): c for c in raw.columns}
    column = next((names[n] for n in _DATE_NAMES if n in names), None)
    if column is None and (raw.columns[0].strip() == "" or raw.columns[0].startswith("Unnamed")):
        column = raw.columns[0]
    if column is None:
        raise DataError(f"{path}: no date column; found {list(raw.columns)}; name it 'date'")
    stamps = pd.to_datetime(raw[column].str.strip(), format="ISO8601", utc=True, errors="coerce")
    if stamps.isna().any():
        line = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise DataError(f"{path}: line {line + 2}: cannot read date {raw[column].iloc[line]!r}; "
                        "write YYYY-MM-DD")
    return pd.DatetimeIndex(stamps).as_unit("ns").rename("timestamp")


def _unique(series: pd.Series, path: Path) -> pd.Series:
    """Sorted by date; a date listed twice with different values is an error, not a guess."""
    series = series.sort_index(kind="stable")
    repeated = series.index.duplicated(keep=False)
    if repeated.any():
        group = series[repeated]
        clash = group.groupby(level=0).nunique(dropna=False) > 1
        if clash.any():
            when = clash.index[np.flatnonzero(clash.to_numpy())[0]]
            raise DataError(f"{path}: date {when:%Y-%m-%d} appears twice with different values; "
                            "keep one of them")
        series = series[~series.index.duplicated(keep="first")]
    return series
