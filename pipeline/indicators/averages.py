"""Moving averages and what is built directly on them: SMA, EMA, WMA, MACD, distance from MA."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.indicators.arrays import column, divide, ewm, out, rolling_mean
from pipeline.indicators.spec import Outputs, ParamSpec, flag, kt_spec, source, whole


def sma(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    return out(value=rolling_mean(column(bars, source), period))


def ema(bars: pd.DataFrame, period: int, source: str, adjust: bool) -> Outputs:
    """KTRDR's EMA: no warm-up NaN, and ``adjust=True`` by default (pandas' weighting)."""
    return out(value=ewm(column(bars, source), span=period, adjust=adjust))


def wma(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    """Linearly weighted mean of the last ``period`` bars, newest weight ``period``.

    ``np.convolve`` runs the window sums in C (each window summed afresh, as KTRDR's
    ``rolling.apply``); a running-sum shortcut would lose digits on long series.
    """
    price = column(bars, source)
    result = np.full(len(price), np.nan)
    if len(price) >= period:
        weights = np.arange(period, 0, -1, dtype=np.float64)  # convolve flips: newest first
        result[period - 1 :] = np.convolve(price, weights, "valid") / weights.sum()
    return out(value=result)


def macd(bars: pd.DataFrame, fast_period: int, slow_period: int, signal_period: int,
         source: str) -> Outputs:
    price = column(bars, source)
    line = ewm(price, span=fast_period) - ewm(price, span=slow_period)
    signal = ewm(line, span=signal_period)
    return out(line=line, signal=signal, histogram=line - signal)


def distance_from_ma(bars: pd.DataFrame, period: int, ma_type: str, source: str) -> Outputs:
    """100 (x - MA) / MA; an MA of (almost) zero gives 0, as KTRDR."""
    price = column(bars, source)
    ma = (rolling_mean(price, period) if ma_type == "SMA"
          else ewm(price, span=period, adjust=True))
    distance = divide(price - ma, ma) * 100.0
    distance[np.abs(ma) <= 1e-10] = 0.0
    return out(value=distance)


_PRICE_MA = {"source": source()}

SPECS = (
    kt_spec("SimpleMovingAverage", ("sma",),
            {"period": whole(20, 2, 500), **_PRICE_MA}, (), sma),
    kt_spec("ExponentialMovingAverage", ("ema",),
            {"period": whole(20, 1, 500), **_PRICE_MA, "adjust": flag(True)}, (), ema),
    kt_spec("WeightedMovingAverage", ("wma",),
            {"period": whole(20, 2, 500), **_PRICE_MA}, (), wma),
    kt_spec("MACDIndicator", (),
            {"fast_period": whole(12, 1, 100), "slow_period": whole(26, 1, 200),
             "signal_period": whole(9, 1, 50), **_PRICE_MA},
            ("line", "signal", "histogram"), macd),
    kt_spec("DistanceFromMAIndicator", (),
            {"period": whole(20, 1, 200), "ma_type": ParamSpec("SMA", str, choices=("SMA", "EMA")),
             **_PRICE_MA}, (), distance_from_ma),
)
