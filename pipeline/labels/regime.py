"""Regime labels (4 classes) from two zigzags scaled by ATR and a volatility overlay.

KTRDR's ``MultiScaleRegimeLabeler.generate_labels`` (grammar doc section 3.5): a macro zigzag
cuts the bars into segments; a segment is TRENDING_UP/DOWN when the micro zigzag's lows rise
(highs fall) often enough inside it, else RANGING; any bar whose next ``atr_period`` returns
are ``vol_crisis_threshold`` times as volatile as its last ``vol_lookback`` is VOLATILE. Bars
after the last macro pivot have no label. All six parameters are read from the strategy
(KTRDR's local orchestrator forwards only two), and label j stays with bar j.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.errors import DataError
from pipeline.labels.base import LabelResult, LabelSource, Param, classes_from

TRENDING_UP, TRENDING_DOWN, RANGING, VOLATILE = 0, 1, 2, 3
CLASS_NAMES = ("TRENDING_UP", "TRENDING_DOWN", "RANGING", "VOLATILE")
_CHUNK = 65_536  # rows of the sliding-window std at a time (bounds memory on long series)


def atr_threshold(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int,
                  multiplier: float) -> float:
    """multiplier x median(SMA_period of the true range) / median(close); TR[0] = H - L."""
    tr = np.empty(len(close))
    tr[0] = high[0] - low[0]
    prev = close[:-1]
    tr[1:] = np.maximum.reduce([high[1:] - low[1:], np.abs(high[1:] - prev),
                                np.abs(low[1:] - prev)])
    if len(close) < period:
        return 0.0
    atr = np.convolve(tr, np.ones(period) / period, mode="valid")
    median_close = float(np.median(close))
    return multiplier * float(np.median(atr)) / median_close if median_close > 0 else 0.0


def regime_pivots(close: list[float], threshold: float) -> list[tuple[int, float]]:
    """(bar, close) zigzag pivots, KTRDR's regime variant: moves are (c - E) / E fractions.

    Bar 0 is a pivot; the first move of ``threshold`` from it sets the direction; a leg's
    running extreme becomes a pivot when price reverses ``threshold`` from it; the last
    running extreme is appended at the end.
    """
    n = len(close)
    if n < 3:
        return [(0, close[0])] if n else []
    pivots = [(0, close[0])]
    at, extreme, direction = 0, close[0], 0
    for i in range(1, n):
        c = close[i]
        if extreme == 0:
            continue
        change = (c - extreme) / extreme
        if direction == 0:
            if abs(change) >= threshold:
                direction, at, extreme = (1 if change > 0 else -1), i, c
        elif (c > extreme) if direction == 1 else (c < extreme):
            at, extreme = i, c
        elif (change <= -threshold) if direction == 1 else (change >= threshold):
            pivots.append((at, extreme))
            direction, at, extreme = -direction, i, c
    if pivots[-1][0] != at:
        pivots.append((at, extreme))
    return pivots


def is_progressive(pivots: list[tuple[int, float]], up: bool, tolerance: float) -> bool:
    """Do the micro pivots of a segment make higher lows (up) or lower highs (down)?

    Each pivot is a high or a low by its neighbours (ends by their one neighbour; a middle
    pivot that is neither is skipped). At least 4 pivots and 2 of the kind are needed; the
    share of strictly progressing consecutive pairs must reach ``tolerance``.
    """
    if len(pivots) < 4:
        return False
    prices = [p for _, p in pivots]
    highs, lows = [], []
    last = len(prices) - 1
    for i, price in enumerate(prices):
        if i == 0 or i == last:
            other = prices[1] if i == 0 else prices[i - 1]
            (lows if price < other else highs).append(price)
        elif price > prices[i - 1] and price > prices[i + 1]:
            highs.append(price)
        elif price < prices[i - 1] and price < prices[i + 1]:
            lows.append(price)
    values = lows if up else highs
    if len(values) < 2:
        return False
    steps = np.diff(values)
    progressing = int((steps > 0).sum() if up else (steps < 0).sum())
    return progressing / len(steps) >= tolerance


def volatile_bars(close: np.ndarray, lookback: int, window: int, crisis: float) -> np.ndarray:
    """VOLATILE mask: std(next ``window`` log returns) / std(last ``lookback``) > ``crisis``.

    Defined for t in [lookback, N - window); both stds have ddof 1 and a zero history is
    never volatile. All False when N < lookback + 2.
    """
    n = len(close)
    mask = np.zeros(n, dtype=bool)
    if n < lookback + 2:
        return mask
    lr = np.diff(np.log(np.maximum(close, 1e-10)))
    for lo in range(lookback, n - window, _CHUNK):
        hi = min(lo + _CHUNK, n - window)
        fwd = _stds(lr, lo, hi, window)
        hist = _stds(lr, lo - lookback, hi - lookback, lookback)
        with np.errstate(divide="ignore", invalid="ignore"):
            mask[lo:hi] = (hist > 0) & (fwd / hist > crisis)
    return mask


def _stds(values: np.ndarray, lo: int, hi: int, width: int) -> np.ndarray:
    """ddof-1 std of values[t : t + width] for t in [lo, hi); 0.0 when width < 2."""
    if width < 2:
        return np.zeros(hi - lo)
    return sliding_window_view(values[lo:hi + width - 1], width).std(axis=1, ddof=1)


def regime_labels(bars: pd.DataFrame, params: Mapping[str, Any]) -> LabelResult:
    """Classes 0-3 for every bar up to the last macro pivot."""
    for column in ("close", "high", "low"):
        if column not in bars.columns:
            raise DataError(f"regime labels need columns close, high, low; missing {column}")
    n = len(bars)
    none = LabelResult(values=np.full(n, -1, dtype=np.int64), valid=np.zeros(n, dtype=bool))
    period = params["atr_period"]
    if n < period + 2:
        return none
    close = bars["close"].to_numpy(np.float64)
    high, low = bars["high"].to_numpy(np.float64), bars["low"].to_numpy(np.float64)
    macro_thr = atr_threshold(high, low, close, period, params["macro_atr_mult"])
    micro_thr = atr_threshold(high, low, close, period, params["micro_atr_mult"])
    if macro_thr <= 0 or micro_thr <= 0:
        return none
    values = close.tolist()
    macro = regime_pivots(values, macro_thr)
    micro = regime_pivots(values, micro_thr)
    if len(macro) < 2:
        return none
    micro_at = np.array([i for i, _ in micro])
    classes = np.full(n, -1, dtype=np.int64)
    for (start, p0), (end, p1) in zip(macro[:-1], macro[1:], strict=True):
        up = p1 > p0
        inside = micro[np.searchsorted(micro_at, start):np.searchsorted(micro_at, end, "right")]
        trend = is_progressive(inside, up, params["progression_tolerance"])
        classes[start:end + 1] = (TRENDING_UP if up else TRENDING_DOWN) if trend else RANGING
    valid = classes >= 0
    crisis = volatile_bars(close, params["vol_lookback"], period, params["vol_crisis_threshold"])
    classes[valid & crisis] = VOLATILE
    return LabelResult(values=classes_from(classes, valid), valid=valid)


SOURCE = LabelSource(
    name="regime",
    params=(
        Param("macro_atr_mult", 3.0, "float", "> 0", lambda x: x > 0),
        Param("micro_atr_mult", 1.0, "float", "> 0", lambda x: x > 0),
        Param("atr_period", 14, "int", ">= 1", lambda x: x >= 1),
        Param("vol_lookback", 120, "int", ">= 2", lambda x: x >= 2),
        Param("vol_crisis_threshold", 2.0, "float", "> 0", lambda x: x > 0),
        Param("progression_tolerance", 0.5, "float", "from 0 to 1", lambda x: 0 <= x <= 1),
    ),
    ignored=("horizon", "trending_threshold"),
    label=regime_labels,
    classes=CLASS_NAMES,
    output_type="regime_classification",
    describe=lambda p: (f"regime (macro {p['macro_atr_mult']:g} x ATR, micro "
                        f"{p['micro_atr_mult']:g} x ATR, ATR {p['atr_period']}, volatile above "
                        f"{p['vol_crisis_threshold']:g} x the last {p['vol_lookback']} bars)"),
)
