"""Volume indicators: OBV, VWAP, MFI, Chaikin money flow, accumulation/distribution line,
volume ratio."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.indicators.arrays import (
    column,
    divide,
    ewm,
    hlc,
    money_flow_multiplier,
    out,
    owned,
    rolling_mean,
    rolling_sum,
    shift,
)
from pipeline.indicators.spec import Outputs, flag, kt_spec, whole


def obv(bars: pd.DataFrame) -> Outputs:
    """On-balance volume starting at 0 (TA-Lib starts at the first volume: same differences)."""
    step = np.sign(np.diff(column(bars, "close"), prepend=np.nan)) * column(bars, "volume")
    step[np.isnan(step)] = 0.0  # the first bar, and no price change known: volume not counted
    return out(value=np.cumsum(step))


def vwap(bars: pd.DataFrame, period: int, use_typical_price: bool) -> Outputs:
    """Volume-weighted price over ``period`` bars (fewer at the start, as KTRDR), or over
    everything so far when ``period`` is 0; NaN where no volume traded."""
    high, low, close = hlc(bars)
    price = (high + low + close) / 3 if use_typical_price else close
    volume = column(bars, "volume")
    weighted = price * volume
    if period == 0:
        total_pv, total_v = np.cumsum(weighted), np.cumsum(volume)
    else:
        total_pv = owned(pd.Series(weighted).rolling(period, min_periods=1).sum())
        total_v = owned(pd.Series(volume).rolling(period, min_periods=1).sum())
    value = divide(total_pv, np.where(total_v == 0, np.nan, total_v))
    return out(value=np.where(np.isinf(value), np.nan, value))


def mfi(bars: pd.DataFrame, period: int) -> Outputs:
    """Money flow index; first value at index ``period`` (every bar in the window has a previous).

    The zero tests count flows instead of reading the rolling sums, which can leave a tiny
    residue where the exact answer is 0. A typical price that differs from the previous one
    only by rounding (1 ulp) counts as a move, as in KTRDR's ``diff() > 0``; TA-Lib's build
    sees no move there, so the two differ on such windows (about 0.8 % of EURUSD bars).
    """
    high, low, close = hlc(bars)
    tp = (high + low + close) / 3.0
    flow = tp * column(bars, "volume")
    move = np.diff(tp, prepend=np.nan)
    rising, falling = move > 0, move < 0
    first = np.isnan(move)

    def window_sum(x: np.ndarray) -> np.ndarray:
        return rolling_sum(np.where(first, np.nan, x), period)

    pos = window_sum(np.where(rising, flow, 0.0))
    neg = window_sum(np.where(falling, flow, 0.0))
    pos_count = window_sum(rising.astype(np.float64))
    neg_count = window_sum(falling.astype(np.float64))
    value = 100.0 - 100.0 / (1.0 + divide(pos, neg))
    value = np.where(neg_count == 0, 100.0, np.where(pos_count == 0, 0.0, value))
    return out(value=np.where(np.isnan(pos), np.nan, value))


def cmf(bars: pd.DataFrame, period: int) -> Outputs:
    """Chaikin money flow and KTRDR's derived columns. ``above_zero``/``below_zero`` are 1.0 or
    0.0 (KTRDR: booleans, False in the warm-up; NaN here)."""
    mult = money_flow_multiplier(bars)
    volume = column(bars, "volume")
    flow_volume = mult * volume
    volume_sum = rolling_sum(volume, period)
    value = divide(rolling_sum(flow_volume, period), volume_sum)
    value[volume_sum == 0] = 0.0
    signal = ewm(value, span=9)
    warm_up = np.isnan(value)
    return out(cmf=value, mf_multiplier=mult, mf_volume=flow_volume,
               momentum=value - shift(value, 5), signal=signal, histogram=value - signal,
               above_zero=np.where(warm_up, np.nan, value > 0),
               below_zero=np.where(warm_up, np.nan, value < 0))


def ad_line(bars: pd.DataFrame, use_sma_smoothing: bool, smoothing_period: int) -> Outputs:
    """Accumulation/distribution line (running sum of money flow volume) and KTRDR's derived
    columns; with ``use_sma_smoothing`` also ``line_sma_{smoothing_period}``, the column KTRDR
    adds and then rejects as an unexpected output (the engine's crash)."""
    mult = money_flow_multiplier(bars)
    flow_volume = mult * column(bars, "volume")
    line = owned(pd.Series(flow_volume).cumsum())  # pandas: a NaN bar does not end the sum
    result = out(line=line, mf_multiplier=mult, mf_volume=flow_volume,
                 roc_10=(line / shift(line, 10) - 1) * 100,
                 momentum_21=line - shift(line, 21),
                 relative_strength=(line / rolling_mean(line, 50, min_periods=20) - 1) * 100)
    if use_sma_smoothing:
        result[f"line_sma_{smoothing_period}"] = rolling_mean(line, smoothing_period)
    return result


_AD_OUTPUTS = ("line", "mf_multiplier", "mf_volume", "roc_10", "momentum_21", "relative_strength")


def _ad_line_outputs(params: Mapping[str, Any]) -> tuple[str, ...]:
    if params["use_sma_smoothing"]:
        return (*_AD_OUTPUTS, f"line_sma_{params['smoothing_period']}")
    return _AD_OUTPUTS


def volume_ratio(bars: pd.DataFrame, period: int) -> Outputs:
    """Volume over its ``period``-bar mean; 1.0 where that mean is (almost) zero, as KTRDR
    (which also writes 1.0 into the warm-up; NaN here)."""
    volume = column(bars, "volume")
    mean = rolling_mean(volume, period)
    value = divide(volume, mean)
    value[np.abs(mean) <= 1e-10] = 1.0  # NaN (warm-up) compares false: stays NaN
    return out(value=value)


SPECS = (
    kt_spec("OBVIndicator", (), {}, (), obv),
    kt_spec("VWAPIndicator", (), {"period": whole(20, 0, 200), "use_typical_price": flag(True)},
            (), vwap),
    kt_spec("MFIIndicator", (), {"period": whole(14, 1, 100)}, (), mfi),
    kt_spec("CMFIndicator", (), {"period": whole(21, 2, 500)},
            ("cmf", "mf_multiplier", "mf_volume", "momentum", "signal", "histogram",
             "above_zero", "below_zero"), cmf),
    kt_spec("ADLineIndicator", (),
            {"use_sma_smoothing": flag(False), "smoothing_period": whole(21, 2, 200)},
            _AD_OUTPUTS, ad_line, _ad_line_outputs),
    kt_spec("VolumeRatioIndicator", (), {"period": whole(20, 2, 100)}, (), volume_ratio),
)
