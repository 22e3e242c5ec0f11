"""Where we part from KTRDR's indicators on purpose (docs/differences.md), and KTRDR's strict
parameter rules, on the bundled EURUSD 1h bars."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import StrategyError
from pipeline.indicators import (
    SPECS,
    InvalidParameter,
    compute_indicator,
    compute_indicators,
)
from pipeline.market_data import default_data_root, read_price_file
from pipeline.strategy import load_strategy


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return read_price_file(default_data_root() / "EURUSD_1h.csv")


# --- supertrend: a working band recursion ---------------------------------------------------


def test_supertrend_has_values_and_both_directions(bars: pd.DataFrame) -> None:
    """KTRDR's trend is NaN on every bar and its direction +1 on every bar (its final bands
    start from the NaN ATR of bar 0); ours starts at the first ATR and then follows price."""
    st = compute_indicator(bars, "supertrend", {})
    trend, direction, close = st["trend"].to_numpy(), st["direction"].to_numpy(), bars["close"]
    assert np.isnan(trend[:9]).all() and np.isnan(direction[:9]).all()  # ATR(10) warm-up
    assert not np.isnan(trend[9:]).any()
    assert set(np.unique(direction[9:])) == {-1.0, 1.0}
    flips = int((np.diff(direction[9:]) != 0).sum())
    assert 50 < flips < 1000  # 5,000 hourly bars: trends of hours to days, not every bar
    # The line sits under the price in an up trend and over it in a down trend.
    up, down = direction == 1, direction == -1
    assert (close.to_numpy()[up] > trend[up]).all()
    assert (close.to_numpy()[down] < trend[down]).all()


def test_supertrend_band_only_tightens_within_a_trend(bars: pd.DataFrame) -> None:
    st = compute_indicator(bars, "supertrend", {"period": 7, "multiplier": 2.0})
    trend, direction = st["trend"].to_numpy()[6:], st["direction"].to_numpy()[6:]
    same = direction[1:] == direction[:-1]
    step = np.diff(trend)[same] * direction[1:][same]  # up trend: may rise; down: may fall
    assert (step >= 0).all()


# --- ichimoku: displacement honoured, nothing read from the future --------------------------


def test_ichimoku_spans_are_displaced_and_chikou_is_the_close(bars: pd.DataFrame) -> None:
    plain = compute_indicator(bars, "ichimoku", {"displacement": 1})
    shifted = compute_indicator(bars, "ichimoku", {})  # displacement 26
    for span in ("senkou_a", "senkou_b"):
        np.testing.assert_array_equal(shifted[span].to_numpy()[26:], plain[span].to_numpy()[1:-25])
        assert np.isnan(shifted[span].to_numpy()[:26]).all()
    np.testing.assert_array_equal(shifted["chikou"], bars["close"])
    # KTRDR's unshifted span A is the mean of today's tenkan and kijun; ours is the past one.
    today = (shifted["tenkan"] + shifted["kijun"]).to_numpy() / 2
    assert not np.allclose(shifted["senkou_a"].to_numpy()[100:], today[100:])


@pytest.mark.parametrize("spec", [s for s in SPECS if s.name != "zigzag"], ids=lambda s: s.name)
def test_no_indicator_reads_a_later_bar(bars: pd.DataFrame, spec: Any) -> None:
    """Every output at bar t is the same whether the bars after t exist or not."""
    params = {"include_oscillator": True} if spec.name == "aroon" else {}
    full = compute_indicator(bars, spec.name, params)
    for end in (120, 1000):
        prefix = compute_indicator(bars.iloc[:end], spec.name, params)
        pd.testing.assert_frame_equal(prefix, full.iloc[:end], check_exact=False, rtol=0,
                                      atol=1e-12)


def test_zigzag_does_read_later_bars(bars: pd.DataFrame) -> None:
    """The zigzag indicator moves its last pivot as the swing extends: a label, not a feature."""
    full = compute_indicator(bars, "zigzag", {"threshold": 0.005})["value"].to_numpy()
    prefix = compute_indicator(bars.iloc[:1000], "zigzag", {"threshold": 0.005})["value"]
    assert not np.array_equal(np.isnan(prefix.to_numpy()), np.isnan(full[:1000]))


# --- adline smoothing; aroon and donchian flags ---------------------------------------------


def test_adline_smoothing_adds_its_column_instead_of_crashing(bars: pd.DataFrame) -> None:
    frame = compute_indicators(bars, {"adl": {"type": "adline", "use_sma_smoothing": True,
                                              "smoothing_period": 30}})
    assert list(frame.columns) == ["adl", "adl.line", "adl.mf_multiplier", "adl.mf_volume",
                                   "adl.roc_10", "adl.momentum_21", "adl.relative_strength",
                                   "adl.line_sma_30"]
    expected = frame["adl.line"].rolling(30).mean()
    np.testing.assert_allclose(frame["adl.line_sma_30"], expected, rtol=1e-12, atol=1e-9)
    plain = compute_indicators(bars, {"adl": {"type": "adline"}})
    assert "adl.line_sma_21" not in plain.columns


@pytest.mark.parametrize(("config", "with_flag", "without_flag"), [
    ({"type": "aroon"}, ("up", "down", "oscillator"), ("up", "down")),
    ({"type": "donchianchannels"}, ("upper", "middle", "lower"), ("upper", "lower")),
])
def test_output_flags_are_honoured(bars: pd.DataFrame, config: dict, with_flag: tuple,
                                   without_flag: tuple) -> None:
    flag = "include_oscillator" if config["type"] == "aroon" else "include_middle"
    on = compute_indicators(bars, {"x": {**config, flag: True}})
    off = compute_indicators(bars, {"x": {**config, flag: False}})
    assert list(on.columns) == ["x", *(f"x.{o}" for o in with_flag)]
    assert list(off.columns) == ["x", *(f"x.{o}" for o in without_flag)]
    pd.testing.assert_frame_equal(off, on[off.columns])


def _strategy(indicator: dict, reference: str) -> dict:
    return {
        "name": "flags",
        "training_data": {"symbols": {"mode": "single", "symbol": "EURUSD"},
                          "timeframes": {"mode": "single", "timeframe": "1h"}},
        "indicators": {"x": indicator},
        "fuzzy_sets": {"zone": {"indicator": reference, "low": [0, 25, 50]}},
        "nn_inputs": [{"fuzzy_set": "zone", "timeframes": "all"}],
    }


@pytest.mark.parametrize(("indicator", "reference"), [
    ({"type": "aroon"}, "x.oscillator"),
    ({"type": "donchianchannels", "include_middle": False}, "x.middle"),
    ({"type": "adline"}, "x.line_sma_21"),
])
def test_strategy_refuses_an_output_its_flag_turns_off(indicator: dict, reference: str) -> None:
    with pytest.raises(StrategyError) as info:
        load_strategy(_strategy(indicator, reference))
    flag = {"aroon": "include_oscillator", "donchianchannels": "include_middle",
            "adline": "use_sma_smoothing"}[indicator["type"]]
    assert any(e.startswith("fuzzy_sets.zone.indicator:") and "no output" in e
               and f"comes with {flag}: true" in e for e in info.value.errors), info.value.errors
    loaded = load_strategy(_strategy({**indicator, flag: True}, reference))
    assert loaded.indicators["x"][flag] is True


# --- warm-up is NaN where KTRDR writes a filler ---------------------------------------------


@pytest.mark.parametrize(("type_name", "column", "first"), [
    ("bollingerbandwidth", "value", 19), ("squeezeintensity", "value", 19),
    ("volumeratio", "value", 19), ("williamsr", "value", 13), ("stochastic", "k", 15),
    ("stochastic", "d", 17), ("cmf", "above_zero", 20), ("cmf", "below_zero", 20),
])
def test_warm_up_is_nan_not_a_filler(bars: pd.DataFrame, type_name: str, column: str,
                                     first: int) -> None:
    values = compute_indicator(bars, type_name, {})[column].to_numpy()
    assert np.isnan(values[:first]).all() and not np.isnan(values[first:]).any()


# --- parameters: KTRDR's types and bounds ---------------------------------------------------


@pytest.mark.parametrize(("type_name", "params", "allowed"), [
    ("rsi", {"period": 14.0}, "a whole number from 2 to 100"),
    ("rsi", {"period": "14"}, "a whole number from 2 to 100"),
    ("rsi", {"period": True}, "a whole number"),
    ("rsi", {"period": 1}, "from 2 to 100"),
    ("macd", {"slow_period": 201}, "from 1 to 200"),
    ("vwap", {"period": -1}, "from 0 to 200"),
    ("bbands", {"multiplier": 0}, "a number > 0 and <= 10"),
    ("bbands", {"multiplier": "2.0"}, "a number"),
    ("zigzag", {"threshold": 1.0}, "a number > 0 and < 1"),
    ("parabolicsar", {"max_af": 0.001}, "a number from 0.01 to 1"),
    ("ema", {"adjust": 1}, "true or false"),
    ("aroon", {"include_oscillator": "yes"}, "true or false"),
    ("distancefromma", {"ma_type": "ema"}, "one of SMA, EMA"),
    ("rsi", {"source": "hl2"}, "one of open, high, low, close, volume"),
])
def test_bad_parameter_is_refused(bars: pd.DataFrame, type_name: str, params: dict,
                                  allowed: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        compute_indicator(bars, type_name, params)
    assert info.value.name == next(iter(params)) and allowed in info.value.allowed


def test_accepted_parameter_forms(bars: pd.DataFrame) -> None:
    as_int = compute_indicator(bars, "squeezeintensity", {"bb_multiplier": 2, "kc_multiplier": 1})
    as_float = compute_indicator(bars, "squeezeintensity",
                                 {"bb_multiplier": 2.0, "kc_multiplier": 1.0})
    pd.testing.assert_frame_equal(as_int, as_float)
    # Undeclared keys (data_source, a typo) are not the formula's business: ignored here.
    pd.testing.assert_frame_equal(compute_indicator(bars, "rsi", {"data_source": "fred_DGS10"}),
                                  compute_indicator(bars, "rsi", {}))
    cumulative = compute_indicator(bars, "vwap", {"period": 0})  # 0 is allowed: cumulative
    assert not cumulative["value"].isna().any()


def test_compute_indicators_names_the_indicator_of_a_bad_parameter(bars: pd.DataFrame) -> None:
    config = {"rsi_14": {"type": "rsi", "period": 14.0}}
    with pytest.raises(ValueError, match=r"indicators\.rsi_14\.period: 14\.0 is not allowed"):
        compute_indicators(bars, copy.deepcopy(config))
