"""Label sources other than zigzag: the grammar doc's counts on the bundled file, each rule by
hand, the registry's parameters (KTRDR's aliases included), and the KTRDR defects we fix.

The bundled-file counts are the ones KTRDR's own labeler classes give (grammar doc section 3;
re-checked by running them from KTRDR's source on the same file: every label array equal).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.labels import (
    REGRESSION,
    SOURCES,
    get_source,
    pair_with_rows,
    purged_split,
    resolve_params,
)
from pipeline.labels.cusum import cusum_events, cusum_threshold
from pipeline.labels.regime import is_progressive, regime_pivots, volatile_bars
from pipeline.labels.sample_weights import uniqueness_weights
from pipeline.labels.triple_barrier import barrier_outcomes, barrier_volatility
from pipeline.market_data import default_data_root, read_price_file


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return read_price_file(default_data_root() / "EURUSD_1h.csv")


def run(bars: pd.DataFrame, name: str, **params):
    source = SOURCES[name]
    return source.label(bars, {**source.defaults, **params})


def counts(result, names: tuple[str, ...]) -> dict[str, int]:
    values = result.values[result.valid]
    return {n: int(c) for n, c in zip(names, np.bincount(values, minlength=len(names)),
                                      strict=True)}


def bars_from(close, high=None, low=None) -> pd.DataFrame:
    close = np.asarray(close, dtype=np.float64)
    high = close if high is None else np.asarray(high, dtype=np.float64)
    low = close if low is None else np.asarray(low, dtype=np.float64)
    index = pd.date_range("2024-01-01", periods=len(close), freq="h", tz="UTC")
    return pd.DataFrame({"open": close, "high": high, "low": low, "close": close,
                         "volume": 1.0}, index=index)


# --------------------------------------------------------------------------- registry


def test_registry_has_the_five_sources_with_their_outputs() -> None:
    assert list(SOURCES) == ["zigzag", "triple_barrier", "forward_return", "regime", "context"]
    assert {n: s.num_classes for n, s in SOURCES.items()} == {
        "zigzag": 3, "triple_barrier": 3, "forward_return": REGRESSION, "regime": 4,
        "context": 3}
    assert {n: s.output_type for n, s in SOURCES.items()} == {
        "zigzag": "classification", "triple_barrier": "classification",
        "forward_return": "regression", "regime": "regime_classification",
        "context": "context_classification"}
    assert SOURCES["triple_barrier"].split == "purged"
    assert SOURCES["triple_barrier"].purge_bars({"max_holding_period": 24}) == 24
    with pytest.raises(ValueError, match="unknown label source 'tb'; allowed: zigzag, trip"):
        get_source("tb")


def test_defaults_are_ktrdrs() -> None:
    assert SOURCES["triple_barrier"].defaults == {
        "pt_multiplier": 2.0, "sl_multiplier": 1.5, "max_holding_period": 50, "vol_span": 50,
        "vol_method": "atr", "compute_weights": False, "cusum_threshold": None,
        "cusum_multiplier": 0.5}
    assert SOURCES["regime"].defaults == {
        "macro_atr_mult": 3.0, "micro_atr_mult": 1.0, "atr_period": 14, "vol_lookback": 120,
        "vol_crisis_threshold": 2.0, "progression_tolerance": 0.5}
    assert SOURCES["context"].defaults == {
        "horizon": 5, "bullish_threshold": 0.005, "bearish_threshold": -0.005}
    assert SOURCES["forward_return"].defaults == {"horizon": 20}


def test_triple_barrier_aliases_are_read_with_a_warning() -> None:
    given = {"source": "triple_barrier", "profit_target_atr": 3, "stop_loss_atr": 1.0,
             "max_holding_bars": 24, "atr_period": 14}
    resolved = resolve_params(SOURCES["triple_barrier"], given, "training.labels.")
    assert resolved.errors == []
    assert resolved.values == {**SOURCES["triple_barrier"].defaults, "pt_multiplier": 3.0,
                               "sl_multiplier": 1.0, "max_holding_period": 24, "vol_span": 14}
    assert resolved.warnings == [
        "training.labels.profit_target_atr: read as pt_multiplier (KTRDR ignores this key "
        "and trains with pt_multiplier = 2.0)",
        "training.labels.stop_loss_atr: read as sl_multiplier (KTRDR ignores this key "
        "and trains with sl_multiplier = 1.5)",
        "training.labels.max_holding_bars: read as max_holding_period (KTRDR ignores this key "
        "and trains with max_holding_period = 50)",
        "training.labels.atr_period: read as vol_span (KTRDR ignores this key "
        "and trains with vol_span = 50)"]


def test_alias_beside_its_target_and_bad_values_are_errors_with_key_paths() -> None:
    given = {"pt_multiplier": 2.0, "profit_target_atr": 3.0, "max_holding_period": 50.0,
             "vol_span": True, "vol_method": "ewm", "compute_weights": "yes",
             "max_holding_bars": 0, "cusum_multiplier": -1, "cusum_threshold": "auto",
             "barrier": 1}
    resolved = resolve_params(SOURCES["triple_barrier"], given, "training.labels.")
    assert resolved.errors == [
        "training.labels.profit_target_atr: given with pt_multiplier, which it is read as; "
        "keep one",
        "training.labels.max_holding_period: 50.0 is not allowed; a whole number >= 1",
        "training.labels.vol_span: true (a true/false) is not allowed; a whole number >= 1",
        "training.labels.vol_method: 'ewm' is not allowed; allowed: atr, close",
        "training.labels.compute_weights: 'yes' is not allowed; true or false",
        "training.labels.max_holding_bars: given with max_holding_period, which it is read "
        "as; keep one",
        "training.labels.cusum_multiplier: -1 is not allowed; a number > 0",
        "training.labels.cusum_threshold: 'auto' is not allowed; a number (a log-return "
        "threshold; 0 or less: cusum_multiplier x mean volatility)"]
    assert resolved.warnings == ["training.labels.barrier: ignored (not a triple_barrier "
                                 "label parameter)"]


def test_regime_keys_ktrdr_ignores_are_accepted_with_a_warning() -> None:
    resolved = resolve_params(SOURCES["regime"], {"horizon": 24, "trending_threshold": 0.5,
                                                  "atr_period": 10}, "training.labels.")
    assert resolved.errors == [] and resolved.values["atr_period"] == 10
    assert resolved.warnings == [
        "training.labels.horizon: accepted; it has no effect (KTRDR ignores it too)",
        "training.labels.trending_threshold: accepted; it has no effect (KTRDR ignores it too)"]


# --------------------------------------------------------------------------- triple barrier


def test_triple_barrier_defaults_on_bundled_eurusd(eurusd: pd.DataFrame) -> None:
    result = run(eurusd, "triple_barrier")
    assert counts(result, ("BUY", "HOLD", "SELL")) == {"SELL": 2649, "BUY": 2295, "HOLD": 6}
    assert result.valid[:4950].all() and not result.valid[4950:].any()  # last H = 50 bars
    assert (result.values[4950:] == -1).all()
    assert result.info == {"take_profit": 2295, "stop_loss": 2649, "expiry": 6}
    assert result.weights is None


def test_triple_barrier_aliases_label_like_their_targets(eurusd: pd.DataFrame) -> None:
    source = SOURCES["triple_barrier"]
    aliased = resolve_params(source, {"profit_target_atr": 1.0, "stop_loss_atr": 1.0,
                                      "max_holding_bars": 24, "atr_period": 14}, "").values
    direct = resolve_params(source, {"pt_multiplier": 1.0, "sl_multiplier": 1.0,
                                     "max_holding_period": 24, "vol_span": 14}, "").values
    a, b = source.label(eurusd, aliased), source.label(eurusd, direct)
    assert np.array_equal(a.values, b.values) and a.valid.sum() == 5000 - 24
    assert not np.array_equal(a.values[:4950], run(eurusd, "triple_barrier").values[:4950])


@pytest.mark.parametrize(("high", "low", "close", "outcome", "hold"), [
    ([100, 105, 111, 100], [100, 95, 99, 100], [100] * 4, 1, 2),        # take profit at d=2
    ([100, 101, 101, 101], [100, 95, 89, 99], [100] * 4, -1, 2),        # stop loss at d=2
    ([100, 112, 100, 100], [100, 88, 100, 100], [100, 101, 100, 100], 1, 1),  # both: close up
    ([100, 112, 100, 100], [100, 88, 100, 100], [100, 99, 100, 100], -1, 1),  # both: close down
    ([100, 104, 106, 106], [100, 96, 94, 104], [100, 100, 100, 105], 0, 3),   # expiry, small r
    ([100, 104, 106, 109.5], [100, 96, 94, 104], [100, 100, 100, 109], 1, 3),  # expiry, r up
    ([100, 104, 106, 106], [100, 96, 94, 91], [100, 100, 100, 92], 0, 3),     # |r| = .08 < .0866
    ([100, 104, 106, 106], [100, 96, 94, 90.5], [100, 100, 100, 91], -1, 3),  # r = -.09
])
def test_barrier_rules_by_hand(high, low, close, outcome, hold) -> None:
    # vol 0.1, pt = sl = 1: barriers 110 and 90; expiry band 0.1 * sqrt(3) * 0.5 = 0.0866.
    arrays = [np.asarray(a, dtype=np.float64) for a in (close, high, low)]
    got, held = barrier_outcomes(*arrays, np.full(4, 0.1), 1.0, 1.0, 3)
    assert (got.tolist(), held.tolist()) == ([outcome], [hold])


def test_barrier_touch_counts_as_a_hit() -> None:
    close = np.array([100.0, 100.0, 100.0])
    up = 100.0 * (1 + 2.0 * 0.05)
    got, held = barrier_outcomes(close, np.array([100.0, up, 100.0]), close, np.full(3, 0.05),
                                 2.0, 1.5, 2)
    assert got.tolist() == [1] and held.tolist() == [1]


def test_atr_volatility_is_an_adjusted_ewm_of_the_bar_range() -> None:
    high = np.array([1.02, 1.05, 1.01, 1.10, 1.03])
    low = np.array([0.98, 1.00, 0.99, 1.00, 1.01])
    close = np.array([1.00, 1.02, 1.00, 1.05, 1.02])
    r = (high - low) / close
    alpha = 2 / (3 + 1)
    expected = [sum((1 - alpha) ** (t - i) * r[i] for i in range(t + 1))
                / sum((1 - alpha) ** (t - i) for i in range(t + 1)) for t in range(5)]
    assert np.allclose(barrier_volatility(close, high, low, 3, "atr"), expected, rtol=1e-12)


def test_close_volatility_fills_its_warm_up_from_bar_span() -> None:
    close = np.array([1.00, 1.01, 0.99, 1.02, 1.00, 1.03])
    vol = barrier_volatility(close, close, close, 3, "close")
    returns = pd.Series(np.diff(np.log(close)))
    ewm_std = returns.ewm(span=3).std().to_numpy()  # NaN for the first return
    assert vol[0] == vol[1] == vol[3] == ewm_std[2]  # bars 0 and 1 had no value: take bar 3's
    assert vol[2] == ewm_std[1] and np.array_equal(vol[3:], ewm_std[2:])


def test_too_few_bars_or_missing_columns_are_data_errors(eurusd: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="max_holding_period \\+ vol_span = 100 bars, got 99"):
        run(eurusd.iloc[:99], "triple_barrier")
    with pytest.raises(DataError, match="missing high"):
        run(eurusd.drop(columns="high"), "triple_barrier")


# --------------------------------------------------------------------------- CUSUM


def test_cusum_by_hand() -> None:
    # log returns .018 x3, -.05, -.01, 0 with h = .01: S+ passes h at bar 2 (.016), then
    # restarts; the drop takes S- to -.04 at bar 4.
    close = np.exp(np.cumsum([0.0, 0.018, 0.018, 0.018, -0.05, -0.01, 0.0]))
    assert np.flatnonzero(cusum_events(close, 0.01, 0.5, 50)).tolist() == [2, 4]


def test_cusum_auto_threshold_on_bundled_eurusd(eurusd: pd.DataFrame) -> None:
    close = eurusd["close"].to_numpy()
    # 0 or less means automatic: 0.5 x the mean EWM(50) std of log returns.
    h = cusum_threshold(close, 0, 0.5, 50)
    expected = 0.5 * pd.Series(np.diff(np.log(close))).ewm(span=50).std().mean()
    assert h == pytest.approx(expected, rel=1e-15)
    assert int(cusum_events(close, 0, 0.5, 50).sum()) == 1182  # KTRDR's CUSUMFilter: same
    assert int(cusum_events(close, 0.002, 0.5, 50).sum()) == 26
    assert not cusum_events(close, 0.002, 0.5, 50)[0]


def test_cusum_filters_labels_to_event_bars(eurusd: pd.DataFrame) -> None:
    plain = run(eurusd, "triple_barrier")
    filtered = run(eurusd, "triple_barrier", cusum_threshold=0)
    events = cusum_events(eurusd["close"].to_numpy(), 0, 0.5, 50)
    assert np.array_equal(filtered.valid, plain.valid & events)
    assert filtered.valid.sum() == 1161 and filtered.info["cusum_events"] == 1182
    assert np.array_equal(filtered.values[filtered.valid], plain.values[filtered.valid])


def test_cusum_filters_feature_rows_with_the_labels(eurusd: pd.DataFrame) -> None:
    """KTRDR filters labels but only front-truncates features (defect 5): rows drift apart."""
    result = run(eurusd, "triple_barrier", cusum_threshold=0)
    rows = eurusd.index[30:]  # feature rows after a 30-bar warm-up
    keep, labels, _ = pair_with_rows(result, eurusd.index, rows)
    bars_kept = np.flatnonzero(result.valid[30:]) + 30
    assert keep.sum() == len(labels) == len(bars_kept)
    assert np.array_equal(rows[keep], eurusd.index[bars_kept])
    assert np.array_equal(labels, result.values[bars_kept])


# --------------------------------------------------------------------------- weights, split


def test_uniqueness_weights_by_hand() -> None:
    # Labels at bars 0, 1, 2 active 2, 2, 1 bars: concurrency 1, 2, 2 on bars 0..2.
    raw = uniqueness_weights(np.array([0, 1, 2]), np.array([2, 2, 1]), normalize=False)
    assert raw.tolist() == [0.75, 0.5, 0.5]
    normed = uniqueness_weights(np.array([0, 1, 2]), np.array([2, 2, 1]))
    assert normed == pytest.approx([0.75 / (1.75 / 3), 0.5 / (1.75 / 3), 0.5 / (1.75 / 3)])
    assert normed.mean() == pytest.approx(1.0)


def test_uniqueness_weights_count_bars_not_list_positions() -> None:
    """CUSUM-filtered labels 10 bars apart with 5-bar windows never overlap: equal weights.
    (KTRDR counts positions in the filtered list, as if they were at bars 0, 1, 2.)"""
    assert uniqueness_weights(np.array([0, 10, 20]), np.array([5, 5, 5])).tolist() == [1, 1, 1]
    adjacent = uniqueness_weights(np.array([0, 1, 2]), np.array([5, 5, 5]), normalize=False)
    assert adjacent == pytest.approx([2.5 / 5, 2 / 5, 2.5 / 5])


def test_compute_weights_on_bundled_eurusd(eurusd: pd.DataFrame) -> None:
    result = run(eurusd, "triple_barrier", compute_weights=True)
    w = result.weights[result.valid]
    assert len(w) == 4950 and np.isnan(result.weights[~result.valid]).all()
    assert w.mean() == pytest.approx(1.0, abs=1e-12) and (w > 0).all()
    rows = np.flatnonzero(result.valid)
    assert np.allclose(w, uniqueness_weights(rows, result.hold[rows]), rtol=0, atol=0)


def test_purged_split_matches_ktrdr_on_4950_labels() -> None:
    split = purged_split(4950, 50, {"train": 0.7, "validation": 0.15})
    assert [len(split[s]) for s in ("train", "validation", "test")] == [3416, 742, 743]
    # held out from 3465 = int(4950 * 0.7); 49-row embargo; every train window ends by 3465
    assert split["train"].tolist() == list(range(3416)) and split["train"][-1] + 50 <= 3465
    assert split["validation"][0] == 3465 and split["test"][-1] == 4949
    assert split["test"][0] == split["validation"][-1] + 1


def test_purged_split_halves_an_even_block_when_test_is_given() -> None:
    """Without `test` KTRDR computes 1 - 0.7 - 0.15 = 0.15000000000000005 and gives validation
    one row fewer than half of an even block (defect 13); our loader always fills `test`."""
    implicit = purged_split(1000, 10, {"train": 0.7, "validation": 0.15})
    explicit = purged_split(1000, 10, {"train": 0.7, "validation": 0.15, "test": 0.15})
    assert (len(implicit["validation"]), len(implicit["test"])) == (149, 151)
    assert (len(explicit["validation"]), len(explicit["test"])) == (150, 150)
    assert len(explicit["train"]) == 690  # the 1 % embargo: rows before 700 - 10
    longer = purged_split(1000, 30, {"train": 0.7, "validation": 0.15, "test": 0.15})
    assert longer["train"][-1] == 670  # the purge: row 670's 30-bar window ends at 700


# --------------------------------------------------------------------------- forward return


def test_forward_return_by_hand() -> None:
    result = run(bars_from([100.0, 110.0, 99.0, 121.0]), "forward_return", horizon=1)
    assert result.valid.tolist() == [True, True, True, False]
    assert result.values[:3] == pytest.approx([0.1, -0.1, 22 / 99], rel=1e-15)
    assert np.isnan(result.values[3])
    two = run(bars_from([100.0, 110.0, 99.0, 121.0]), "forward_return", horizon=2)
    assert two.values[:2] == pytest.approx([-0.01, 0.1], rel=1e-15)
    assert two.valid.tolist() == [True, True, False, False]


def test_forward_return_on_bundled_eurusd(eurusd: pd.DataFrame) -> None:
    result = run(eurusd, "forward_return")
    close = eurusd["close"].to_numpy()
    assert result.valid.sum() == 4980 and result.values.dtype == np.float64
    assert result.values[123] == (close[143] - close[123]) / close[123]


def test_forward_return_refuses_short_or_zero_data() -> None:
    with pytest.raises(DataError, match="horizon \\+ 1 = 21 bars, got 20"):
        run(bars_from(np.ones(20)), "forward_return")
    with pytest.raises(DataError, match="close is 0 at bar 2"):
        run(bars_from([1.0, 2.0, 0.0, 1.0]), "forward_return", horizon=1)


# --------------------------------------------------------------------------- context


def test_context_by_hand() -> None:
    close = [100.0, 100.6, 100.2, 99.4, 100.0, 100.5]
    result = run(bars_from(close), "context", horizon=1)
    # r = +.006, -.004, -.008, +.006, +.005 (exactly the threshold: neutral), then no label.
    assert result.values.tolist() == [0, 2, 1, 0, 2, -1]
    assert result.valid.tolist() == [True] * 5 + [False]
    assert not run(bars_from(close[:3]), "context", horizon=3).valid.any()


def test_context_on_bundled_eurusd_daily(eurusd: pd.DataFrame) -> None:
    daily = eurusd.resample("1D").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last"}).dropna()
    result = run(daily, "context")
    assert len(daily) == 251 and (~result.valid).sum() == 5
    assert counts(result, ("BULLISH", "BEARISH", "NEUTRAL")) == {
        "NEUTRAL": 115, "BULLISH": 88, "BEARISH": 43}


# --------------------------------------------------------------------------- regime


def test_regime_defaults_on_bundled_eurusd(eurusd: pd.DataFrame) -> None:
    result = run(eurusd, "regime")
    assert result.valid.all()
    assert dict(enumerate(np.bincount(result.values, minlength=4).tolist())) == {
        0: 2181, 1: 1858, 2: 758, 3: 203}


def test_regime_reads_all_six_keys(eurusd: pd.DataFrame) -> None:
    """KTRDR's local orchestrator drops macro/micro_atr_mult, atr_period and
    progression_tolerance (defect 2). These counts are KTRDR's labeler with the same six."""
    result = run(eurusd, "regime", macro_atr_mult=2.0, micro_atr_mult=0.7, atr_period=10,
                 vol_lookback=60, vol_crisis_threshold=1.5, progression_tolerance=0.6)
    assert np.bincount(result.values[result.valid]).tolist() == [1781, 1783, 817, 619]


def test_regime_pivots_by_hand() -> None:
    pivots = regime_pivots([1.0, 1.1, 1.2, 1.05, 0.9, 1.0], 0.1)
    assert pivots == [(0, 1.0), (2, 1.2), (4, 0.9), (5, 1.0)]
    assert regime_pivots([1.0, 1.05, 1.02], 0.1) == [(0, 1.0)]


def test_progression_by_hand() -> None:
    rising_lows = list(enumerate([1.0, 2.0, 1.5, 2.5, 2.0, 3.0]))
    assert is_progressive(rising_lows, up=True, tolerance=0.5)
    assert not is_progressive(rising_lows, up=False, tolerance=0.5)  # highs rise too
    assert not is_progressive(rising_lows[:3], up=True, tolerance=0.0)  # < 4 pivots
    mixed_lows = list(enumerate([1.0, 2.0, 0.5, 2.5, 2.0, 3.0]))  # lows 1, .5, 2: half rise
    assert is_progressive(mixed_lows, up=True, tolerance=0.5)
    assert not is_progressive(mixed_lows, up=True, tolerance=0.6)


def test_volatile_bars_equal_the_rolling_std_ratio() -> None:
    rng = np.random.default_rng(3)
    returns = rng.normal(0, 0.001, 300)
    returns[150:160] *= 8.0
    close = 100 * np.exp(np.cumsum(returns))
    mask = volatile_bars(close, 60, 14, 2.0)
    lr = np.diff(np.log(close))
    expected = np.zeros(300, dtype=bool)
    for t in range(60, 300 - 14):
        expected[t] = np.std(lr[t:t + 14], ddof=1) / np.std(lr[t - 60:t], ddof=1) > 2.0
    assert np.array_equal(mask, expected) and 10 < mask.sum() < 40
    assert not volatile_bars(close[:61], 60, 14, 2.0).any()


def test_bars_after_the_last_macro_pivot_have_no_regime_label() -> None:
    rng = np.random.default_rng(5)
    up = np.linspace(100, 130, 200) + rng.normal(0, 0.3, 200)
    drift = 130 - np.linspace(0, 1.0, 40)  # a small decline: below any reversal threshold
    close = np.concatenate([up, drift])
    bars = bars_from(close, close * 1.002, close * 0.998)
    result = run(bars, "regime", vol_lookback=50)
    last = int(np.argmax(close[:200]))
    assert result.valid[:last + 1].all() and not result.valid[last + 1:].any()
    keep, labels, _ = pair_with_rows(result, bars.index, bars.index[20:])
    # feature row j keeps label j (KTRDR shifts features by vol_lookback when the tail is NaN)
    assert keep.sum() == last + 1 - 20 and np.array_equal(labels, result.values[20:last + 1])


def test_pairing_refuses_rows_that_are_not_labelled_bars(eurusd: pd.DataFrame) -> None:
    result = run(eurusd, "zigzag")
    with pytest.raises(ValueError, match="labelled bar"):
        pair_with_rows(result, eurusd.index[:100], eurusd.index[50:150])
