"""Every one of the 31 indicators equals KTRDR's formula to 1e-9 after its warm-up.

The expected values come from ``tests/indicator_reference.py``: plain loops written from the
formulas in the grammar doc, sharing no code with ``pipeline.indicators``, run on the bundled
EURUSD 1h bars. The tolerance is 1e-9 absolute plus 1e-13 of the value: the A/D line runs into
the hundreds of thousands, where float64 sums summed in another order differ by more than 1e-9.

Warm-up: where KTRDR writes a filler into the warm-up (the stochastic's 50, Williams %R's -50,
0.0 for Bollinger band width and squeeze intensity, 1.0 for the volume ratio, False for CMF's
flags), we write NaN; ``start`` is the first bar that must equal KTRDR, and every bar before it
must be NaN. Without ``start`` the NaN pattern must be KTRDR's exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import indicator_reference as ref
import numpy as np
import pandas as pd
import pytest

from pipeline.indicators import SPECS, compute_indicator, indicator_spec
from pipeline.market_data import default_data_root, read_price_file

TOL = 1e-9
REL = 1e-13

Case = tuple[str, dict[str, Any], Callable[..., dict], dict[str, Any], dict[str, int]]

# (type as a strategy writes it, its params, reference, reference kwargs, start per output)
CASES: dict[str, Case] = {
    "rsi": ("rsi", {}, ref.ref_rsi, {}, {}),
    "rsi_7": ("RSI", {"period": 7}, ref.ref_rsi, {"period": 7}, {}),
    "sma": ("sma", {}, ref.ref_sma, {}, {}),
    "ema": ("ema", {}, ref.ref_ema, {}, {}),
    "ema_unadjusted": ("EMA", {"period": 10, "adjust": False}, ref.ref_ema,
                       {"period": 10, "adjust": False}, {}),
    "wma": ("wma", {}, ref.ref_wma, {}, {}),
    "wma_5": ("weightedmovingaverage", {"period": 5}, ref.ref_wma, {"period": 5}, {}),
    "macd": ("macd", {}, ref.ref_macd, {}, {}),
    "macd_5_35_5": ("MACD", {"fast_period": 5, "slow_period": 35, "signal_period": 5},
                    ref.ref_macd, {"fast": 5, "slow": 35, "signal": 5}, {}),
    "distancefromma": ("distancefromma", {}, ref.ref_distancefromma, {}, {}),
    "distancefromma_ema": ("distancefromma", {"ma_type": "EMA", "period": 30},
                           ref.ref_distancefromma, {"ma_type": "EMA", "period": 30}, {}),
    "adx": ("adx", {}, ref.ref_adx, {}, {}),
    "adx_7": ("ADX", {"period": 7}, ref.ref_adx, {"period": 7}, {}),
    "parabolicsar": ("parabolicsar", {}, ref.ref_parabolicsar, {}, {}),
    "parabolicsar_fast": ("parabolicsar", {"initial_af": 0.01, "step_af": 0.03, "max_af": 0.3},
                          ref.ref_parabolicsar, {"initial_af": 0.01, "step_af": 0.03,
                                                 "max_af": 0.3}, {}),
    "supertrend": ("supertrend", {}, ref.ref_supertrend, {}, {}),
    "supertrend_7_2": ("SuperTrend", {"period": 7, "multiplier": 2}, ref.ref_supertrend,
                       {"period": 7, "multiplier": 2.0}, {}),
    "zigzag": ("zigzag", {"threshold": 0.005}, ref.ref_zigzag, {"threshold": 0.005}, {}),
    "roc": ("roc", {}, ref.ref_roc, {}, {}),
    "momentum": ("momentum", {}, ref.ref_momentum, {}, {}),
    "cci": ("cci", {}, ref.ref_cci, {}, {}),
    "williamsr": ("williamsr", {}, ref.ref_williamsr, {}, {"value": 13}),
    "stochastic": ("stochastic", {}, ref.ref_stochastic, {}, {"k": 15, "d": 17}),
    "stochastic_5_4_1": ("stochastic", {"k_period": 5, "d_period": 4, "smooth_k": 1},
                         ref.ref_stochastic, {"k_period": 5, "d_period": 4, "smooth_k": 1},
                         {"k": 4, "d": 7}),
    "rvi": ("rvi", {}, ref.ref_rvi, {}, {}),
    "fishertransform": ("fishertransform", {}, ref.ref_fishertransform, {}, {}),
    "fishertransform_20_1": ("fishertransform", {"period": 20, "smoothing": 1},
                             ref.ref_fishertransform, {"period": 20, "smoothing": 1}, {}),
    "aroon": ("aroon", {"include_oscillator": True}, ref.ref_aroon, {}, {}),
    "aroon_25": ("aroon", {"period": 25, "include_oscillator": True}, ref.ref_aroon,
                 {"period": 25}, {}),
    "atr": ("atr", {}, ref.ref_atr, {}, {}),
    "bollingerbands": ("bbands", {"multiplier": 2.5}, ref.ref_bollingerbands,
                       {"multiplier": 2.5}, {}),
    "bollingerbandwidth": ("bollingerbandwidth", {}, ref.ref_bollingerbandwidth, {},
                           {"value": 19}),
    "bollingerbandwidth_10": ("bollingerbandwidth", {"period": 10, "multiplier": 1.5},
                              ref.ref_bollingerbandwidth, {"period": 10, "multiplier": 1.5},
                              {"value": 9}),
    "keltnerchannels": ("keltnerchannels", {}, ref.ref_keltnerchannels, {}, {}),
    "keltnerchannels_30": ("keltnerchannels", {"period": 30, "atr_period": 14, "multiplier": 1.5},
                           ref.ref_keltnerchannels,
                           {"period": 30, "atr_period": 14, "multiplier": 1.5}, {}),
    "donchianchannels": ("donchianchannels", {}, ref.ref_donchianchannels, {}, {}),
    "squeezeintensity": ("squeezeintensity", {}, ref.ref_squeezeintensity, {}, {"value": 19}),
    "squeezeintensity_30": ("squeezeintensity", {"bb_period": 30, "bb_multiplier": 1.5,
                                                 "kc_period": 25, "kc_multiplier": 1},
                            ref.ref_squeezeintensity, {"bb_period": 30, "bb_multiplier": 1.5,
                                                       "kc_period": 25, "kc_multiplier": 1.0},
                            {"value": 29}),
    "obv": ("obv", {}, ref.ref_obv, {}, {}),
    "vwap": ("vwap", {}, ref.ref_vwap, {}, {}),
    "vwap_cumulative_close": ("vwap", {"period": 0, "use_typical_price": False}, ref.ref_vwap,
                              {"period": 0, "use_typical_price": False}, {}),
    "mfi": ("mfi", {}, ref.ref_mfi, {}, {}),
    "cmf": ("cmf", {}, ref.ref_cmf, {}, {"above_zero": 20, "below_zero": 20}),
    "adline": ("adline", {}, ref.ref_adline, {}, {}),
    "adline_smoothed": ("adline", {"use_sma_smoothing": True, "smoothing_period": 30},
                        ref.ref_adline, {"smoothing_period": 30}, {}),
    "volumeratio": ("volumeratio", {}, ref.ref_volumeratio, {}, {"value": 19}),
}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return read_price_file(default_data_root() / "EURUSD_1h.csv")


@pytest.fixture(scope="module")
def lists(bars: pd.DataFrame) -> ref.Bars:
    return {k[0]: bars[k].tolist() for k in ("open", "high", "low", "close", "volume")}


def assert_after_warm_up(ours: np.ndarray, expected: list[float], start: int | None) -> None:
    """NaN before ``start`` (default: KTRDR's first value); from it, KTRDR's values and NaNs."""
    expected_arr = np.asarray(expected, dtype=np.float64)
    if start is None:
        valid = np.flatnonzero(~np.isnan(expected_arr))
        start = int(valid[0]) if valid.size else len(expected_arr)
    assert np.isnan(ours[:start]).all(), f"not NaN in the warm-up (bars < {start})"
    ours, expected_arr = ours[start:], expected_arr[start:]
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected_arr))
    both = ~np.isnan(expected_arr)
    diff = np.abs(ours[both] - expected_arr[both])
    bad = diff > TOL + REL * np.abs(expected_arr[both])
    assert not bad.any(), f"{bad.sum()} bars differ, by up to {diff.max():.3g}"


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_indicator_equals_ktrdr_formula_after_warm_up(
    case: str, bars: pd.DataFrame, lists: ref.Bars
) -> None:
    type_name, params, reference, ref_kwargs, starts = CASES[case]
    ours = compute_indicator(bars, type_name, params)
    expected = reference(lists, **ref_kwargs)
    names = list(ours.columns)
    if names == ["value"]:
        assert_after_warm_up(ours["value"].to_numpy(), expected["value"], starts.get("value"))
        return
    assert set(names) <= set(expected), names
    for name in names:
        assert_after_warm_up(ours[name].to_numpy(), expected[name], starts.get(name))


def test_every_registered_type_is_checked() -> None:
    covered = {indicator_spec(case[0]).name for case in CASES.values()} | {"ichimoku"}
    assert covered == {spec.name for spec in SPECS} and len(covered) == 31


def test_ichimoku_lines_and_spans_shifted_forward(bars: pd.DataFrame, lists: ref.Bars) -> None:
    """Tenkan, kijun and chikou are KTRDR's; the senkou spans are KTRDR's values moved
    ``displacement`` bars later (the fix), so bar t holds what was known at t - displacement."""
    for displacement in (26, 5):
        ours = compute_indicator(bars, "ichimoku", {"displacement": displacement})
        expected = ref.ref_ichimoku(lists)
        for name in ("tenkan", "kijun", "chikou"):
            assert_after_warm_up(ours[name].to_numpy(), expected[name], None)
        for name in ("senkou_a", "senkou_b"):
            assert_after_warm_up(ours[name].to_numpy(),
                                 ref.shifted(expected[name], displacement), None)


def test_window_extremes_by_doubling_equal_brute_force() -> None:
    """The sparse-table rolling max/min and bars-since-extreme, on prices with many ties and a
    NaN, for every window length from 1 to 70 (odd ones, powers of two, longer than the data)."""
    from pipeline.indicators.arrays import bars_since_extreme, rolling_max, rolling_min

    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=64).cumsum(), 0)  # whole numbers: ties everywhere
    with_nan = x.copy()
    with_nan[30] = np.nan
    for n in range(1, 71):
        for fast, slow in ((rolling_max, "max"), (rolling_min, "min")):
            expected = getattr(pd.Series(with_nan).rolling(n), slow)().to_numpy()
            np.testing.assert_array_equal(fast(with_nan, n), expected)
        for highest in (True, False):
            since = bars_since_extreme(x, n, highest)
            assert np.isnan(since[: n - 1]).all()
            for i in range(n - 1, len(x)):
                window = list(x[i - n + 1 : i + 1])
                target = max(window) if highest else min(window)
                assert since[i] == n - 1 - window.index(target)
