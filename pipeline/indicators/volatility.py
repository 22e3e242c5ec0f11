"""Volatility and channels: ATR, Bollinger bands and width, Keltner, Donchian, squeeze intensity.

KTRDR writes 0.0 into the warm-up of Bollinger band width and squeeze intensity (its zero-width
guard also catches the NaN of the warm-up); here the warm-up stays NaN, so it is dropped with
the other warm-up rows, and every value after it equals KTRDR's.
"""

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
    out,
    rolling_max,
    rolling_mean,
    rolling_min,
    rolling_std,
    true_range,
)
from pipeline.indicators.spec import Outputs, flag, kt_spec, number, source, whole

KELTNER_ATR_PERIOD = 10  # Keltner's default; squeeze intensity always uses it (KTRDR)


def atr(bars: pd.DataFrame, period: int) -> Outputs:
    """KTRDR's ATR is a simple mean of the true range, not Wilder's smoothing."""
    return out(value=rolling_mean(true_range(*hlc(bars)), period))


def _bands(price: np.ndarray, period: int, multiplier: float) -> tuple[np.ndarray, ...]:
    """Bollinger upper, middle, lower with the sample std (ddof=1) like KTRDR; TA-Lib's uses
    ddof=0, by design different."""
    middle = rolling_mean(price, period)
    width = multiplier * rolling_std(price, period)
    return middle + width, middle, middle - width


def bollinger_bands(bars: pd.DataFrame, period: int, multiplier: float, source: str) -> Outputs:
    upper, middle, lower = _bands(column(bars, source), period, multiplier)
    return out(upper=upper, middle=middle, lower=lower)


def bollinger_band_width(bars: pd.DataFrame, period: int, multiplier: float,
                         source: str) -> Outputs:
    """(upper - lower) / middle; a middle of (almost) zero gives 0, as KTRDR."""
    upper, middle, lower = _bands(column(bars, source), period, multiplier)
    width = divide(upper - lower, middle)
    width[np.abs(middle) <= 1e-10] = 0.0  # NaN (warm-up) compares false: stays NaN
    return out(value=width)


def _keltner(bars: pd.DataFrame, period: int, atr_period: int,
             multiplier: float) -> tuple[np.ndarray, ...]:
    high, low, close = hlc(bars)
    middle = ewm(close, span=period)
    width = multiplier * rolling_mean(true_range(high, low, close), atr_period)
    return middle + width, middle, middle - width


def keltner_channels(bars: pd.DataFrame, period: int, atr_period: int,
                     multiplier: float) -> Outputs:
    """EMA of the close (no warm-up) plus/minus a multiple of the simple-mean ATR."""
    upper, middle, lower = _keltner(bars, period, atr_period, multiplier)
    return out(upper=upper, middle=middle, lower=lower)


def donchian_channels(bars: pd.DataFrame, period: int, include_middle: bool) -> Outputs:
    upper = rolling_max(column(bars, "high"), period)
    lower = rolling_min(column(bars, "low"), period)
    return out(upper=upper, middle=(upper + lower) / 2, lower=lower)


def _donchian_outputs(params: Mapping[str, Any]) -> tuple[str, ...]:
    """KTRDR always outputs the middle line; here ``include_middle: false`` leaves it out."""
    return ("upper", "middle", "lower") if params["include_middle"] else ("upper", "lower")


def squeeze_intensity(bars: pd.DataFrame, bb_period: int, bb_multiplier: float, kc_period: int,
                      kc_multiplier: float, source: str) -> Outputs:
    """How far inside the Keltner channel the Bollinger bands sit, as a share of its width
    (0 when they reach or cross it)."""
    bb_upper, _, bb_lower = _bands(column(bars, source), bb_period, bb_multiplier)
    kc_upper, _, kc_lower = _keltner(bars, kc_period, KELTNER_ATR_PERIOD, kc_multiplier)
    kc_range = kc_upper - kc_lower
    above = divide(kc_upper - bb_upper, kc_range)
    value = np.maximum(0.0, np.minimum(above, divide(bb_lower - kc_lower, kc_range)))
    value[np.abs(kc_range) <= 1e-10] = 0.0  # NaN (warm-up) compares false: stays NaN
    return out(value=value)


_CLOSE = {"source": source()}

SPECS = (
    kt_spec("ATRIndicator", (), {"period": whole(14, 1, 100)}, (), atr),
    kt_spec("BollingerBandsIndicator", ("bbands",),
            {"period": whole(20, 2, 200), "multiplier": number(2.0, gt=0, le=10.0), **_CLOSE},
            ("upper", "middle", "lower"), bollinger_bands),
    kt_spec("BollingerBandWidthIndicator", (),
            {"period": whole(20, 2, 200), "multiplier": number(2.0, gt=0, le=10.0), **_CLOSE},
            (), bollinger_band_width),
    kt_spec("KeltnerChannelsIndicator", (),
            {"period": whole(20, 2, 500), "atr_period": whole(KELTNER_ATR_PERIOD, 2, 200),
             "multiplier": number(2.0, gt=0, le=10.0)},
            ("upper", "middle", "lower"), keltner_channels),
    kt_spec("DonchianChannelsIndicator", (),
            {"period": whole(20, 2, 500), "include_middle": flag(True)},
            ("upper", "middle", "lower"), donchian_channels, _donchian_outputs),
    kt_spec("SqueezeIntensityIndicator", (),
            {"bb_period": whole(20, 2, 100), "bb_multiplier": number(2.0, gt=0, le=5.0),
             "kc_period": whole(20, 2, 100), "kc_multiplier": number(2.0, gt=0, le=5.0),
             **_CLOSE}, (), squeeze_intensity),
)
