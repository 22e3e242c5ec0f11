"""Array helpers the formulas share: columns, rolling windows, smoothing, shifts.

Everything works on whole float64 numpy columns; pandas is used only for its compiled rolling
and ``ewm`` loops, with the same calls KTRDR makes, so the results match its to rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.indicators.spec import PRICE_COLUMNS, Outputs


def column(bars: pd.DataFrame, name: str) -> np.ndarray:
    """A price column as float64 numpy; ``source`` is user input, so name the allowed values."""
    if name not in bars.columns:
        allowed = ", ".join(PRICE_COLUMNS)
        raise ValueError(f"source {name!r} is not a price column; allowed: {allowed}")
    return bars[name].to_numpy(dtype=np.float64)


def hlc(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return column(bars, "high"), column(bars, "low"), column(bars, "close")


def owned(series: pd.Series) -> np.ndarray:
    """The values of a temporary Series made here, as a writable array without a copy.

    pandas hands out read-only views to protect the Series; ours is dropped at once, so the
    array is ours. A frame built on read-only arrays would refuse ``df.loc[...] = v`` later,
    and copying every output instead costs more than most formulas at a million bars.
    """
    values = series.to_numpy(dtype=np.float64)
    if not values.flags.writeable:
        try:
            values.flags.writeable = True
        except ValueError:  # a numpy that refuses: pay for the copy
            values = values.copy()
    return values


def out(**columns: np.ndarray) -> Outputs:
    """A formula's named output arrays ("value" for a single output)."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}


def rolling_mean(x: np.ndarray, n: int, min_periods: int | None = None) -> np.ndarray:
    return owned(pd.Series(x).rolling(n, min_periods=min_periods).mean())


def rolling_sum(x: np.ndarray, n: int) -> np.ndarray:
    return owned(pd.Series(x).rolling(n).sum())


def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Sample standard deviation (ddof=1), as pandas' default and KTRDR's bands."""
    return owned(pd.Series(x).rolling(n).std())


def _rolling_extreme(x: np.ndarray, n: int, pick: np.ufunc) -> np.ndarray:
    """Max or min of each full window of ``n`` bars by doubling (a sparse table).

    After k passes ``cur[i]`` is the extreme of ``x[i : i + 2**k]``; a window of ``n`` is the
    union of two such overlapping spans. log2(n) whole-array passes, exact (no arithmetic),
    several times faster than pandas' rolling max; a NaN in a window gives NaN, as pandas.
    """
    result = np.full(len(x), np.nan)
    if len(x) < n:
        return result
    cur, span = x, 1
    while span * 2 <= n:
        cur = pick(cur[:-span], cur[span:])
        span *= 2
    count = len(x) - n + 1
    result[n - 1 :] = pick(cur[:count], cur[n - span : n - span + count])
    return result


def bars_since_extreme(x: np.ndarray, n: int, highest: bool) -> np.ndarray:
    """Bars since the highest (or lowest) value of each full window of ``n`` bars; a tie counts
    from its earliest bar. Same doubling as ``_rolling_extreme``, carrying the extreme's index
    (the left span wins ties, so the earliest index survives). NaN before the first window.
    """
    result = np.full(len(x), np.nan)
    if len(x) < n:
        return result
    better = np.greater_equal if highest else np.less_equal

    def merge(lv: np.ndarray, li: np.ndarray, rv: np.ndarray, ri: np.ndarray):
        left = better(lv, rv)
        return np.where(left, lv, rv), np.where(left, li, ri)

    value, index, span = x, np.arange(len(x)), 1
    while span * 2 <= n:
        value, index = merge(value[:-span], index[:-span], value[span:], index[span:])
        span *= 2
    count = len(x) - n + 1
    _, where = merge(value[:count], index[:count], value[n - span : n - span + count],
                     index[n - span : n - span + count])
    result[n - 1 :] = np.arange(n - 1, len(x)) - where
    return result


def rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    return _rolling_extreme(x, n, np.maximum)


def rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    return _rolling_extreme(x, n, np.minimum)


def midpoint(high: np.ndarray, low: np.ndarray, n: int) -> np.ndarray:
    """(highest high + lowest low) / 2 over ``n`` bars: Donchian's middle, Ichimoku's lines."""
    return (rolling_max(high, n) + rolling_min(low, n)) / 2


def ewm(x: np.ndarray, *, alpha: float | None = None, span: float | None = None,
        adjust: bool = False) -> np.ndarray:
    """Exponential smoothing via pandas' compiled loop (the recursion never runs in Python).

    Leading NaNs stay NaN and the recursion starts at the first value, as in KTRDR.
    """
    return owned(pd.Series(x).ewm(alpha=alpha, span=span, adjust=adjust).mean())


def shift(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` delayed by ``n`` bars, NaN-padded (numpy, so no index alignment cost)."""
    result = np.full_like(x, np.nan)
    if 0 < n < len(x):
        result[n:] = x[:-n]
    elif n == 0:
        result[:] = x
    return result


def nan_before(x: np.ndarray, start: int) -> np.ndarray:
    """``x`` with its first ``start`` bars set to NaN: the warm-up, where a window is not full."""
    x[: max(0, start)] = np.nan
    return x


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Wilder's true range; the first bar has no previous close, so it is just high - low."""
    prev = shift(close, 1)
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    tr[:1] = high[:1] - low[:1]
    return tr


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` without numpy's warnings; callers decide what 0 or NaN means."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def money_flow_multiplier(bars: pd.DataFrame) -> np.ndarray:
    """((C - L) - (H - C)) / (H - L), 0 on a bar with no range (CMF and the A/D line)."""
    high, low, close = hlc(bars)
    price_range = high - low
    mult = divide((close - low) - (high - close), price_range)
    mult[price_range == 0] = 0.0
    return mult


def windows_apply(x: np.ndarray, n: int, reduce, chunk_cells: int = 4_000_000) -> np.ndarray:
    """``reduce(windows, first_row)`` over every full window of ``n`` bars, NaN before.

    Chunked so memory stays near ``chunk_cells`` floats whatever the length; ``reduce`` gets a
    (rows, n) view and the bar index of its first row's last bar, and returns one value a row.
    """
    result = np.full(len(x), np.nan)
    if len(x) < n:
        return result
    windows = sliding_window_view(x, n)
    step = max(1, chunk_cells // n)
    for start in range(0, len(windows), step):
        block = windows[start : start + step]
        result[n - 1 + start : n - 1 + start + len(block)] = reduce(block, n - 1 + start)
    return result
