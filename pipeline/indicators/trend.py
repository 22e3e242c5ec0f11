"""Trend indicators: ADX, Parabolic SAR, Ichimoku, SuperTrend, ZigZag.

SAR, SuperTrend and ZigZag are recursions whose next state depends on a comparison with the
previous one; they run one Python loop per bar over plain lists (the fastest pure-Python form),
everything around them is whole-array numpy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.indicators.arrays import (
    column,
    divide,
    ewm,
    hlc,
    midpoint,
    out,
    rolling_mean,
    shift,
    true_range,
)
from pipeline.indicators.spec import Outputs, kt_spec, number, source, whole


def adx(bars: pd.DataFrame, period: int) -> Outputs:
    """ADX with Wilder smoothing as ``ewm(alpha=1/period, adjust=False)`` from bar 0 (KTRDR).

    TA-Lib seeds its Wilder sums differently; the two converge geometrically (see tests).
    """
    high, low, close = hlc(bars)
    up = np.diff(high, prepend=np.nan)
    down = -np.diff(low, prepend=np.nan)
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    alpha = 1.0 / period
    tr = ewm(true_range(high, low, close), alpha=alpha)
    plus_di = np.where(tr == 0, 0.0, divide(ewm(plus_dm, alpha=alpha), tr) * 100.0)
    minus_di = np.where(tr == 0, 0.0, divide(ewm(minus_dm, alpha=alpha), tr) * 100.0)
    di_sum = plus_di + minus_di
    dx = np.where(di_sum == 0, 0.0, divide(np.abs(plus_di - minus_di), di_sum) * 100.0)
    return out(adx=ewm(dx, alpha=alpha), plus_di=plus_di, minus_di=minus_di)


def parabolic_sar(bars: pd.DataFrame, initial_af: float, step_af: float,
                  max_af: float) -> Outputs:
    """Wilder's SAR as KTRDR runs it: trend from the first two closes, NaN on bar 0."""
    high, low, close = (a.tolist() for a in hlc(bars))
    if len(close) < 2:
        return out(value=np.full(len(close), np.nan))
    up = close[1] > close[0]
    ep, value = (high[1], low[0]) if up else (low[1], high[0])
    af = initial_af
    sar = [float("nan"), value]
    add = sar.append
    # Each bar with the two before it (the SAR may not pass their lows or highs).
    history = zip(high[2:], low[2:], high[1:], low[1:], high, low, strict=False)
    for h, lo, h1, lo1, h2, lo2 in history:
        value += af * (ep - value)
        if up:
            if lo <= value:  # reversal: the extreme point becomes the SAR
                up, value, af, ep = False, ep, initial_af, lo
            else:
                value = min(value, lo1, lo2)
                if h > ep:
                    ep, af = h, min(af + step_af, max_af)
        elif h >= value:
            up, value, af, ep = True, ep, initial_af, h
        else:
            value = max(value, h1, h2)
            if lo < ep:
                ep, af = lo, min(af + step_af, max_af)
        add(value)
    return out(value=np.array(sar, dtype=np.float64))


def ichimoku(bars: pd.DataFrame, tenkan_period: int, kijun_period: int, senkou_b_period: int,
             displacement: int) -> Outputs:
    """Ichimoku with the senkou spans shifted ``displacement`` bars forward.

    KTRDR ignores ``displacement`` (no shift at all). A span plotted ahead is, read at bar t,
    the value computed at bar t - displacement: only closed bars. Chikou stays the current close:
    plotting it back would put a later close on an earlier bar, which a feature must never see.
    """
    high, low, close = hlc(bars)
    tenkan = midpoint(high, low, tenkan_period)
    kijun = midpoint(high, low, kijun_period)
    senkou_a = shift((tenkan + kijun) / 2, displacement)
    senkou_b = shift(midpoint(high, low, senkou_b_period), displacement)
    return out(tenkan=tenkan, kijun=kijun, senkou_a=senkou_a, senkou_b=senkou_b,
               chikou=close.copy())


def _supertrend_recursion(upper: list[float], lower: list[float], close: list[float],
                          start: int) -> tuple[np.ndarray, np.ndarray]:
    """The line and direction from bar ``start`` (the first bar with an ATR) on.

    KTRDR seeds the final bands at bar 0, where the ATR is still NaN; every later comparison
    with NaN is false, so its bands never leave NaN. Seeding at ``start`` is the fix. The loop
    keeps only the line and the bars where the direction flips; the direction is rebuilt from
    those flips with numpy.
    """
    n = len(close)
    trend, direction = np.full(n, np.nan), np.full(n, np.nan)
    if start >= n:
        return trend, direction
    final_up, final_low = upper[start], lower[start]
    up = first_up = not close[start] <= final_low
    line = [final_low if up else final_up]
    add, flips = line.append, []
    prev_close = close[start]
    bars = zip(upper[start + 1 :], lower[start + 1 :], close[start + 1 :], strict=True)
    for i, (band_up, band_low, now) in enumerate(bars, 1):
        if band_up < final_up or prev_close > final_up:
            final_up = band_up
        if band_low > final_low or prev_close < final_low:
            final_low = band_low
        prev_close = now
        if up:
            if now <= final_low:  # KTRDR's comparisons, so a tie flips as there
                up = False
                flips.append(i)
        elif now >= final_up:
            up = True
            flips.append(i)
        add(final_low if up else final_up)
    trend[start:] = line
    flipped = np.zeros(n - start, dtype=np.int64)
    flipped[flips] = 1
    same = np.cumsum(flipped) % 2 == 0
    direction[start:] = np.where(same, 1.0, -1.0) if first_up else np.where(same, -1.0, 1.0)
    return trend, direction


def supertrend(bars: pd.DataFrame, period: int, multiplier: float) -> Outputs:
    """SuperTrend: ATR bands around the median price that only tighten within a trend."""
    high, low, close = hlc(bars)
    atr = rolling_mean(true_range(high, low, close), period)
    median = (high + low) / 2
    band = multiplier * atr
    valid = np.flatnonzero(~np.isnan(atr))
    start = int(valid[0]) if valid.size else len(close)
    trend, direction = _supertrend_recursion(
        (median + band).tolist(), (median - band).tolist(), close.tolist(), start)
    return out(trend=trend, direction=direction)


def zigzag(bars: pd.DataFrame, threshold: float, source: str) -> Outputs:
    """Price at the current zigzag pivots, NaN elsewhere (KTRDR's indicator form).

    It moves a pivot forward while the swing extends, so a bar's value depends on later bars:
    a label source, not a feature (used as one it leaves NaN after the warm-up, an error).
    """
    prices = column(bars, source).tolist()
    result = np.full(len(prices), np.nan)
    if not prices:
        return out(value=result)
    result[0] = last_price = prices[0]
    last_idx, direction = 0, 0
    for i in range(1, len(prices)):
        price = prices[i]
        change = (price - last_price) / last_price
        if direction == 0 and abs(change) >= threshold:
            direction = 1 if change > 0 else -1
        elif direction != 0 and (price - last_price) * direction > 0:
            result[last_idx] = np.nan  # the swing extends: its pivot moves here
        elif direction != 0 and change * direction <= -threshold:
            direction = -direction
        else:
            continue
        result[i], last_idx, last_price = price, i, price
    return out(value=result)


SPECS = (
    kt_spec("ADXIndicator", (), {"period": whole(14, 2, 200)},
            ("adx", "plus_di", "minus_di"), adx),
    kt_spec("ParabolicSARIndicator", (),
            {"initial_af": number(0.02, ge=0.001, le=0.1),
             "step_af": number(0.02, ge=0.001, le=0.1),
             "max_af": number(0.2, ge=0.01, le=1.0)}, (), parabolic_sar),
    kt_spec("IchimokuIndicator", (),
            {"tenkan_period": whole(9, 1, 50), "kijun_period": whole(26, 1, 100),
             "senkou_b_period": whole(52, 1, 200), "displacement": whole(26, 1, 100)},
            ("tenkan", "kijun", "senkou_a", "senkou_b", "chikou"), ichimoku),
    kt_spec("SuperTrendIndicator", (),
            {"period": whole(10, 2, 200), "multiplier": number(3.0, gt=0, le=10.0)},
            ("trend", "direction"), supertrend),
    kt_spec("ZigZagIndicator", (),
            {"threshold": number(0.05, gt=0, lt=1), "source": source()}, (), zigzag),
)
