"""Features (step 4) and the dataset (step 6) on the bundled EURUSD file and on small tables:
feature order, look-ahead-free multi-timeframe columns, warm-up handling, the chronological
per-symbol split and normalization fitted on the training split only."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import talib

from pipeline import features as feat
from pipeline.dataset import SymbolData, build_dataset, split_counts
from pipeline.errors import FeatureError
from pipeline.market_data import default_data_root, load_prices
from pipeline.split_checks import split_class_problems
from pipeline.strategy import load_strategy

EURUSD_CSV = default_data_root() / "EURUSD_1h.csv"
HOUR, FOUR = pd.Timedelta("1h"), pd.Timedelta("4h")


def strategy_mapping(**changes) -> dict:
    """Two timeframes, sets whose memberships are NOT in alphabetical order, a raw input."""
    data = {
        "name": "order_check",
        "training_data": {
            "symbols": {"mode": "single", "symbol": "EURUSD"},
            "timeframes": {"mode": "multi_timeframe", "list": ["1h", "4h"],
                           "base_timeframe": "1h"},
        },
        "indicators": {"rsi_14": {"type": "rsi", "period": 14},
                       "macd": {"type": "macd"}},
        "fuzzy_sets": {
            "zone": {"indicator": "rsi_14", "high": [50, 75, 100], "low": [0, 25, 50]},
            "mom": {"indicator": "macd.histogram", "pos": [0, 0.001, 0.002],
                    "neg": [-0.002, -0.001, 0]},
        },
        "nn_inputs": [
            {"fuzzy_set": "zone", "timeframes": "all"},
            {"raw_indicator": "macd.histogram", "timeframes": ["4h"], "normalization": "zscore"},
            {"fuzzy_set": "mom", "timeframes": "all"},
            {"raw_indicator": "rsi_14", "timeframes": "all", "normalization": "none"},
        ],
        "model": {"type": "mlp", "architecture": {"hidden_layers": [4]}},
        "training": {"labels": {"zigzag_threshold": 0.01}},
    }
    data.update(changes)
    return data


def eurusd_frames(strategy):
    bars = {tf: load_prices(default_data_root(), "EURUSD", tf) for tf in strategy.timeframes}
    frames = feat.compute_indicator_frames(strategy, bars)
    feat.add_fuzzy(strategy, frames)
    return bars, frames


@functools.cache
def independent_4h_rsi_on_1h() -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The 4h RSI each hourly row may see, computed without the pipeline: read the CSV, bucket
    hours into epoch-aligned 4h bars, TA-Lib RSI on their closes, and for each hourly bar (closing
    at t + 1h) take the last 4h bar whose close (start + 4h) is at or before that."""
    raw = pd.read_csv(EURUSD_CSV, index_col=0)
    hours = pd.DatetimeIndex(pd.to_datetime(raw.index, utc=True))
    close = raw["Close"].to_numpy(np.float64)
    buckets = hours.floor("4h")
    starts = pd.DatetimeIndex(sorted(set(buckets)))
    last_close = pd.Series(close, index=hours).groupby(buckets).last().reindex(starts)
    rsi_4h = talib.RSI(last_close.to_numpy(np.float64), timeperiod=14)
    closes_4h = (starts + FOUR).asi8
    expected = np.full(len(hours), np.nan)
    for row, closes_at in enumerate((hours + HOUR).asi8):
        seen = int(np.count_nonzero(closes_4h <= closes_at))  # 4h bars closed by then
        if seen:
            expected[row] = rsi_4h[seen - 1]
    return hours, expected


def test_resolved_features_order_and_table_columns() -> None:
    strategy = load_strategy(strategy_mapping())
    expected = [
        "1h_zone_high", "1h_zone_low", "4h_zone_high", "4h_zone_low",
        "4h_macd.histogram_raw",
        "1h_mom_pos", "1h_mom_neg", "4h_mom_pos", "4h_mom_neg",
        "1h_rsi_14_raw", "4h_rsi_14_raw",
    ]  # fmt: skip
    assert feat.resolved_features(strategy) == expected
    _, frames = eurusd_frames(strategy)
    table = feat.feature_table(strategy, frames)
    assert list(table.columns) == expected
    assert len(table) == 5000  # one row per hourly bar before warm-up is dropped


def test_multi_timeframe_columns_only_see_closed_4h_bars() -> None:
    strategy = load_strategy(strategy_mapping())
    bars, frames = eurusd_frames(strategy)
    table = feat.feature_table(strategy, frames)
    hours, expected = independent_4h_rsi_on_1h()
    assert table.index.equals(hours)
    got = table["4h_rsi_14_raw"].to_numpy()
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    assert ok.sum() > 4900
    np.testing.assert_allclose(got[ok], expected[ok], rtol=0, atol=1e-9)

    # Spot check by hand: the 4h bar starting 2017-05-02 00:00 closes at 04:00. The 02:00 hourly
    # bar (closing 03:00) must still see the bar before it; the 03:00 bar (closing 04:00) sees it.
    rsi_4h = frames["4h"].indicators["rsi_14"]
    day = pd.Timestamp("2017-05-02", tz="UTC")
    assert table.loc[day + 2 * HOUR, "4h_rsi_14_raw"] == rsi_4h.loc[day - FOUR]
    assert table.loc[day + 3 * HOUR, "4h_rsi_14_raw"] == rsi_4h.loc[day]
    assert rsi_4h.loc[day] != rsi_4h.loc[day - FOUR]

    # The 4h fuzzy column is the membership of that same visible value: low is [0, 25, 50].
    x = expected[ok]
    low = np.clip(np.minimum(x / 25, (50 - x) / 25), 0, 1)
    np.testing.assert_allclose(table["4h_zone_low"].to_numpy()[ok], low, atol=1e-12)


def test_warmup_rows_dropped_not_zero_filled() -> None:
    strategy = load_strategy(strategy_mapping())
    bars, frames = eurusd_frames(strategy)
    table = feat.feature_table(strategy, frames)
    trimmed, dropped = feat.drop_warmup(table, "EURUSD")
    # The slowest input is the 4h RSI: first defined where the independent computation says.
    _, expected = independent_4h_rsi_on_1h()
    first = int(np.flatnonzero(~np.isnan(expected))[0])
    assert dropped == first > 14 * 4
    assert len(trimmed) == 5000 - first
    assert trimmed.index[0] == bars["1h"].index[first]
    assert not trimmed.isna().to_numpy().any()
    pd.testing.assert_frame_equal(trimmed, table.iloc[first:])  # values kept, nothing filled


def test_nan_after_warmup_names_the_feature() -> None:
    index = pd.date_range("2020-01-01", periods=8, freq="1h", tz="UTC")
    table = pd.DataFrame({"1h_a_raw": [np.nan, 1, 2, 3, 4, 5, 6, 7],
                          "1h_b_x": [np.nan, np.nan, 1, 1, np.nan, 1, 1, 1]}, index=index)
    with pytest.raises(FeatureError, match=r"1h_b_x.*2020-01-01 04:00"):
        feat.drop_warmup(table, "EURUSD")
    with pytest.raises(FeatureError, match="never valid"):
        feat.drop_warmup(table.assign(**{"1h_b_x": np.nan}), "EURUSD")
    trimmed, dropped = feat.drop_warmup(table.iloc[5:], "EURUSD")
    assert dropped == 0 and len(trimmed) == 3


def test_split_counts_on_odd_n() -> None:
    split = {"train": 0.7, "validation": 0.15, "test": 0.15}
    # 101 * 0.7 = 70.7 -> 70; 101 * 0.85 = 85.85 -> 85, so validation 15 and test 16.
    assert split_counts(101, split) == (70, 15, 16)
    # 7 * 0.5 = 3.5 -> 3; 7 * 0.75 = 5.25 -> 5: 3, 2, 2.
    assert split_counts(7, {"train": 0.5, "validation": 0.25, "test": 0.25}) == (3, 2, 2)
    # 4985 rows (the rsi_minimal table): 3489.5 -> 3489; 4237.25 -> 4237: 3489, 748, 748.
    assert split_counts(4985, split) == (3489, 748, 748)


def symbol_part(symbol: str, n: int, offset: float, label_shift: int) -> SymbolData:
    index = pd.date_range("2021-01-01", periods=n, freq="1D", tz="UTC")
    values = offset + np.arange(n, dtype=np.float64)
    frame = pd.DataFrame({"1d_v_raw": values, "1d_w_raw": -values}, index=index)
    return SymbolData(symbol, frame, (np.arange(n) + label_shift) % 3)


def test_split_per_symbol_then_concatenated_in_symbol_order() -> None:
    split = {"train": 0.7, "validation": 0.15, "test": 0.15}
    a, b = symbol_part("AAA", 11, 0.0, 0), symbol_part("BBB", 21, 1000.0, 1)
    data = build_dataset([a, b], split, {})
    # AAA: int(7.7)=7, int(9.35)-7=2, 2 left. BBB: int(14.7)=14, int(17.85)-14=3, 4 left.
    assert data.rows == {"AAA": {"train": 7, "validation": 2, "test": 2},
                         "BBB": {"train": 14, "validation": 3, "test": 4}}
    bounds = {"train": ((0, 7), (0, 14)), "validation": ((7, 9), (14, 17)),
              "test": ((9, 11), (17, 21))}
    for name, ((a0, a1), (b0, b1)) in bounds.items():
        rows = np.r_[np.arange(a0, a1), 1000 + np.arange(b0, b1)]
        np.testing.assert_array_equal(data.X[name][:, 0], rows.astype(np.float32))
        # each symbol keeps ITS OWN labels: AAA's row i has i % 3, BBB's (i + 1) % 3
        labels = np.r_[np.arange(a0, a1) % 3, (np.arange(b0, b1) + 1) % 3]
        np.testing.assert_array_equal(data.y[name], labels)
        assert data.X[name].dtype == np.float32 and data.y[name].dtype == np.int64
    assert data.feature_names == ["1d_v_raw", "1d_w_raw"]
    # Each split's first and last bar over both symbols (AAA days 0-10, BBB days 0-20).
    day = [d.isoformat() for d in pd.date_range("2021-01-01", periods=21, tz="UTC")]
    assert data.spans == {"train": {"first": day[0], "last": day[13]},
                          "validation": {"first": day[7], "last": day[16]},
                          "test": {"first": day[9], "last": day[20]}}


def test_a_single_class_split_or_a_class_missing_from_train_is_named_with_the_fix() -> None:
    fine = {"train": {"BUY": 5, "HOLD": 1, "SELL": 4}, "validation": {"BUY": 1, "HOLD": 0,
                                                                       "SELL": 2}}
    assert split_class_problems(fine) == []
    one = {**fine, "validation": {"BUY": 52, "HOLD": 0, "SELL": 0}}
    (problem,) = split_class_problems(one)
    assert problem.startswith("the validation split has a single class, BUY (BUY 52, HOLD 0, "
                              "SELL 0)") and "longer date range" in problem
    missing = {**fine, "train": {"BUY": 5, "HOLD": 0, "SELL": 4}}
    (problem,) = split_class_problems(missing)
    assert problem.startswith("class HOLD is missing from the train split (BUY 5, HOLD 0, "
                              "SELL 4): the model cannot learn it;")
    only = {"train": {"BUY": 0, "HOLD": 9, "SELL": 0}, "validation": {"BUY": 0, "HOLD": 3,
                                                                      "SELL": 0}}
    assert [p.split(",")[0] for p in split_class_problems(only)] == [
        "the train split has a single class", "the validation split has a single class"]


def test_normalization_fitted_on_train_only() -> None:
    n = 20  # 0.7 / 0.15 / 0.15 -> 14 train, 3 validation, 3 test rows
    rng = np.random.default_rng(5)
    z = rng.normal(size=n)
    z[14:] += 50.0  # validation and test far outside the training range
    m = rng.uniform(10, 20, size=n)
    m[17:] = [0.0, 100.0, 15.0]
    const = np.r_[np.full(14, 3.0), np.arange(6.0)]
    index = pd.date_range("2021-01-01", periods=n, freq="1h", tz="UTC")
    frame = pd.DataFrame({"z": z, "m": m, "c": const, "keep": z}, index=index)
    part = SymbolData("X", frame, np.zeros(n, dtype=np.int64))
    data = build_dataset([part], {"train": 0.7, "validation": 0.15, "test": 0.15},
                         {"z": "zscore", "m": "minmax", "c": "minmax", "keep": "none"})
    train_z, train_m = z[:14], m[:14]
    mean, std = train_z.mean(), np.sqrt(((train_z - train_z.mean()) ** 2).mean())
    lo, hi = train_m.min(), train_m.max()
    assert data.normalization["z"] == {"method": "zscore", "mean": pytest.approx(mean),
                                       "std": pytest.approx(std)}
    assert data.normalization["m"] == {"method": "minmax", "min": lo, "max": hi}
    assert "keep" not in data.normalization
    np.testing.assert_allclose(data.X["test"][:, 0], (z[17:] - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(data.X["validation"][:, 1], (m[14:17] - lo) / (hi - lo), rtol=1e-6)
    np.testing.assert_allclose(data.X["test"][:, 1], (m[17:] - lo) / (hi - lo), rtol=1e-6)
    assert data.X["test"][:, 1].min() < 0 and data.X["test"][:, 1].max() > 1  # not refitted
    for name in ("train", "validation", "test"):
        assert np.all(data.X[name][:, 2] == 0.0)  # constant on train -> 0, never inf or NaN
    np.testing.assert_array_equal(data.X["train"][:, 3], z[:14].astype(np.float32))
    assert data.X["train"][:, 0].mean() == pytest.approx(0, abs=1e-6)


def test_empty_split_is_an_error() -> None:
    part = symbol_part("AAA", 3, 0.0, 0)
    with pytest.raises(FeatureError, match="validation split is empty"):
        build_dataset([part], {"train": 0.7, "validation": 0.15, "test": 0.15}, {})
