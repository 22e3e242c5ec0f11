"""Momentum and oscillators: RSI, ROC, momentum, CCI, Williams %R, stochastic, RVI, Fisher
transform, Aroon."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.indicators.arrays import (
    bars_since_extreme,
    column,
    divide,
    ewm,
    hlc,
    nan_before,
    out,
    owned,
    rolling_max,
    rolling_mean,
    rolling_min,
    shift,
    windows_apply,
)
from pipeline.indicators.spec import Outputs, flag, kt_spec, source, whole


def _wilder_seeded(x: np.ndarray, n: int) -> np.ndarray:
    """``avg = (avg*(n-1) + x)/n`` seeded at index ``n`` with the plain mean of ``x[1..n]``.

    This is an ewm with alpha 1/n whose first input is the seed, so pandas runs the recursion.
    Returns NaN before index ``n``.
    """
    result = np.full_like(x, np.nan)
    if len(x) <= n:
        return result
    seeded = x[n:].copy()
    seeded[0] = x[1 : n + 1].mean()
    result[n:] = ewm(seeded, alpha=1.0 / n)
    return result


def rsi(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    """Wilder RSI, first value at index ``period`` (as TA-Lib and KTRDR)."""
    change = np.diff(column(bars, source), prepend=np.nan)
    avg_gain = _wilder_seeded(np.maximum(change, 0.0), period)
    avg_loss = _wilder_seeded(np.maximum(-change, 0.0), period)
    # 100 - 100/(1 + gain/loss) written as 100 gain/(gain + loss): no division by a zero loss
    # (which gives exactly 100), one pass fewer, and TA-Lib's own rounding.
    total = avg_gain + avg_loss
    value = 100.0 * divide(avg_gain, total)
    value[total == 0] = 50.0  # price did not move at all: neutral
    return out(value=value)


def roc(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    price = column(bars, source)
    before = shift(price, period)
    value = divide(price - before, before) * 100.0
    return out(value=np.where(np.isinf(value), np.nan, value))


def momentum(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    price = column(bars, source)
    return out(value=price - shift(price, period))


def cci(bars: pd.DataFrame, period: int) -> Outputs:
    """CCI; a flat window (zero deviation) gives 0, as TA-Lib, where KTRDR divides 0 by 0."""
    high, low, close = hlc(bars)
    tp = (high + low + close) / 3
    mean = rolling_mean(tp, period)

    def deviation(windows: np.ndarray, first: int) -> np.ndarray:
        centre = mean[first : first + len(windows), None]
        return np.abs(windows - centre).mean(axis=1)

    mad = windows_apply(tp, period, deviation)
    value = divide(tp - mean, 0.015 * mad)
    return out(value=np.where(mad == 0, 0.0, value))


def williams_r(bars: pd.DataFrame, period: int) -> Outputs:
    """%R; a window with no range reads as the neutral -50, as KTRDR (warm-up stays NaN)."""
    high, low, close = hlc(bars)
    hh, ll = rolling_max(high, period), rolling_min(low, period)
    value = divide(hh - close, hh - ll) * -100.0
    value[np.isnan(value)] = -50.0
    return out(value=nan_before(value, period - 1))


def stochastic(bars: pd.DataFrame, k_period: int, d_period: int, smooth_k: int) -> Outputs:
    """Slow stochastic; a zero-range window reads as the neutral 50, as KTRDR.

    KTRDR also writes 50 into the warm-up and averages it into the first %K and %D values; those
    bars are NaN here, so every value that is not NaN equals KTRDR's.
    """
    high, low, close = hlc(bars)
    hh, ll = rolling_max(high, k_period), rolling_min(low, k_period)
    raw = divide(close - ll, hh - ll) * 100.0
    raw[np.isnan(raw)] = 50.0
    k = pd.Series(raw).rolling(smooth_k, min_periods=1).mean()
    d = k.rolling(d_period, min_periods=1).mean()
    k_start = k_period + smooth_k - 2
    return out(k=nan_before(owned(k), k_start), d=nan_before(owned(d), k_start + d_period - 1))


def rvi(bars: pd.DataFrame, period: int, signal_period: int) -> Outputs:
    """Relative vigour: 1-2-2-1 weighted (close - open) over (high - low), each averaged."""
    high, low, close = hlc(bars)
    body, span = close - column(bars, "open"), high - low

    def weighted(x: np.ndarray) -> np.ndarray:
        result = np.full_like(x, np.nan)  # defined from bar 3
        result[3:] = (x[:-3] + 2 * x[1:-2] + 2 * x[2:-1] + x[3:]) / 6.0
        return result

    num, den = rolling_mean(weighted(body), period), rolling_mean(weighted(span), period)
    value = np.where(den != 0, divide(num, den), np.nan)
    return out(rvi=value, signal=rolling_mean(value, signal_period))


def fisher_transform(bars: pd.DataFrame, period: int, smoothing: int) -> Outputs:
    """Fisher transform of the median price's place in its range, EMA-smoothed (KTRDR's form,
    without Ehlers' value recursion); signal = the previous bar's value."""
    high, low = column(bars, "high"), column(bars, "low")
    hh, ll = rolling_max(high, period), rolling_min(low, period)
    price_range = hh - ll
    x = 2 * divide((high + low) / 2 - ll, price_range) - 1
    x[price_range == 0] = 0.0
    x = np.clip(x, -0.999, 0.999)
    fisher = ewm(0.5 * np.log((1 + x) / (1 - x)), span=smoothing)
    return out(fisher=fisher, signal=shift(fisher, 1))


def aroon(bars: pd.DataFrame, period: int, include_oscillator: bool) -> Outputs:
    """Aroon over the last ``period`` bars (the current one included); ties: the earliest."""
    since_high = bars_since_extreme(column(bars, "high"), period, highest=True)
    since_low = bars_since_extreme(column(bars, "low"), period, highest=False)
    up, down = (period - since_high) / period * 100.0, (period - since_low) / period * 100.0
    return out(up=up, down=down, oscillator=up - down)


def _aroon_outputs(params: Mapping[str, Any]) -> tuple[str, ...]:
    """KTRDR always adds the oscillator; here it comes when ``include_oscillator`` asks."""
    return ("up", "down", "oscillator") if params["include_oscillator"] else ("up", "down")


_CLOSE = {"source": source()}

SPECS = (
    kt_spec("RSIIndicator", (), {"period": whole(14, 2, 100), **_CLOSE}, (), rsi),
    kt_spec("ROCIndicator", (), {"period": whole(10, 1, 100), **_CLOSE}, (), roc),
    kt_spec("MomentumIndicator", (), {"period": whole(10, 1, 100), **_CLOSE}, (), momentum),
    kt_spec("CCIIndicator", (), {"period": whole(20, 2, 100)}, (), cci),
    kt_spec("WilliamsRIndicator", (), {"period": whole(14, 1, 100)}, (), williams_r),
    kt_spec("StochasticIndicator", (),
            {"k_period": whole(14, 1, 100), "d_period": whole(3, 1, 20),
             "smooth_k": whole(3, 1, 20)}, ("k", "d"), stochastic),
    kt_spec("RVIIndicator", (), {"period": whole(10, 4, 100), "signal_period": whole(4, 1, 50)},
            ("rvi", "signal"), rvi),
    kt_spec("FisherTransformIndicator", (),
            {"period": whole(10, 2, 100), "smoothing": whole(3, 1, 20)},
            ("fisher", "signal"), fisher_transform),
    kt_spec("AroonIndicator", (), {"period": whole(14, 1, 200), "include_oscillator": flag(False)},
            ("up", "down", "oscillator"), aroon, _aroon_outputs),
)
