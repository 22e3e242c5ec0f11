"""context_data: files under the data root, KTRDR's source ids, and no look-ahead.

The alignment tests use hand-made series small enough to check by eye: each says which value
a given hourly bar may see, from the date the value is stamped and its publication lag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import features as feat
from pipeline.context_data import cot_percentile
from pipeline.context_files import read_fred
from pipeline.errors import DataError, FeatureError, StrategyError
from pipeline.market_data import read_price_file
from pipeline.strategy import load_strategy


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def strategy(context: list, indicators: dict, **extra) -> dict:
    """A small strategy whose nn_inputs read every indicator raw."""
    return {
        "name": "ctx", "training_data": {"symbols": {"mode": "single", "symbol": "EURUSD"},
                                         "timeframes": {"mode": "single", "timeframe": "1h"}},
        "context_data": context, "indicators": indicators, "fuzzy_sets": {},
        "nn_inputs": [{"raw_indicator": i, "timeframes": "all"} for i in indicators], **extra,
    }  # fmt: skip


def hourly_bars(start: str, hours: int, close: np.ndarray | None = None) -> pd.DataFrame:
    index = pd.date_range(start, periods=hours, freq="1h", tz="UTC", name="timestamp")
    c = np.linspace(1.0, 2.0, hours) if close is None else close
    return pd.DataFrame({"open": c, "high": c + 0.01, "low": c - 0.01, "close": c,
                         "volume": np.zeros(hours)}, index=index)


def indicator_on_hours(raw: dict, root: Path, bars: pd.DataFrame, column: str) -> pd.Series:
    """What the base (1h) rows see of one indicator, through the pipeline's own functions."""
    s = load_strategy(raw)
    context = feat.compute_context_indicators(s, feat.load_context_series(s, root))
    return feat.compute_indicator_frames(s, {"1h": bars}, context)["1h"].indicators[column]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- no look-ahead -------------------------------------------------------------------------------


def test_fred_value_is_seen_from_the_day_after_its_date(tmp_path: Path) -> None:
    # Mon 6 Jan 2020: 1.0, Tue: 2.0, Wed: missing ("."), Thu: 4.0.
    write(tmp_path / "fred" / "RATE.csv",
          "date,value\n2020-01-06,1.0\n2020-01-07,2.0\n2020-01-08,.\n2020-01-09,4.0\n")
    bars = hourly_bars("2020-01-06 00:00", 24 * 5)
    raw = strategy([{"provider": "fred", "series": "RATE"}],
                   {"rate": {"type": "sma", "period": 2, "data_source": "fred_RATE"}})
    seen = indicator_on_hours(raw, tmp_path, bars, "rate")
    # The mean runs over the series' own rows (two days, not two hours): Mon NaN, Tue 1.5,
    # Wed 2.0 ("." carries Tuesday's value, as KTRDR does), Thu 3.0. A bar sees a day's value
    # once its close reaches the date + 1 day: the 23:00 bar, closing at midnight, is the first.
    assert seen[: utc("2020-01-07 22:00")].isna().all()
    assert seen[utc("2020-01-07 23:00")] == 1.5
    assert seen[utc("2020-01-08 22:00")] == 1.5  # Wednesday's value is not published yet
    assert seen[utc("2020-01-08 23:00")] == 2.0
    assert seen[utc("2020-01-09 22:00")] == 2.0
    assert seen[utc("2020-01-09 23:00")] == 3.0
    assert seen[utc("2020-01-10 23:00")] == 3.0  # carried forward


def test_every_bar_sees_the_latest_value_published_by_its_close(tmp_path: Path) -> None:
    """Brute force over a month of random daily values and an explicit 36-hour lag."""
    rng = np.random.default_rng(1)
    dates = pd.bdate_range("2020-03-02", "2020-04-03")
    values = np.round(rng.uniform(0, 5, len(dates)), 3)
    write(tmp_path / "fred" / "X.csv", "date,value\n" + "".join(
        f"{d:%Y-%m-%d},{v}\n" for d, v in zip(dates, values, strict=True)))
    bars = hourly_bars("2020-03-01 00:00", 24 * 36)
    raw = strategy([{"provider": "fred", "series": ["X"], "publication_lag": "36h"}],
                   {"x": {"type": "sma", "period": 2, "data_source": "fred_X"}})
    seen = indicator_on_hours(raw, tmp_path, bars, "x").to_numpy()
    known = dates.tz_localize("UTC") + pd.Timedelta(hours=36)
    for i, start in enumerate(bars.index):
        published = np.flatnonzero(known <= start + pd.Timedelta(hours=1))
        k = published[-1] if published.size else -1
        expected = (values[k - 1] + values[k]) / 2 if k >= 1 else np.nan
        assert np.isclose(seen[i], expected, rtol=0, atol=1e-12, equal_nan=True), start


def test_cot_report_waits_three_days_unless_told(tmp_path: Path) -> None:
    tuesdays = pd.date_range("2019-01-01", periods=60, freq="W-TUE")
    positions = np.arange(60) * 100 - 2000
    write(tmp_path / "cot" / "EUR.csv", "date,net_position\n" + "".join(
        f"{d:%Y-%m-%d},{p}\n" for d, p in zip(tuesdays, positions, strict=True)))
    last = tuesdays[-1]  # Tuesday 2020-02-18
    bars = hourly_bars(f"{last - pd.Timedelta(days=1):%Y-%m-%d}", 24 * 6)
    ind = {"net": {"type": "sma", "period": 2, "data_source": "cot_EUR_net_pos"}}
    seen = indicator_on_hours(strategy([{"provider": "cftc_cot", "report": "EUR"}], ind),
                              tmp_path, bars, "net")
    friday = last + pd.Timedelta(days=3)
    mean = (positions[:-1] + positions[1:]) / 2  # two reports, by report
    assert seen[utc(f"{friday - pd.Timedelta(hours=2)}")] == mean[-2]
    assert seen[utc(f"{friday - pd.Timedelta(hours=1)}")] == mean[-1]  # closes Fri 00:00
    # publication_lag: 0 is KTRDR's alignment: Tuesday's positions from Tuesday 00:00 on.
    ktrdr = indicator_on_hours(strategy([{"provider": "cftc_cot", "report": "EUR",
                                          "publication_lag": 0}], ind), tmp_path, bars, "net")
    assert ktrdr[utc(f"{last - pd.Timedelta(hours=1)}")] == mean[-1]


def test_ib_pair_follows_the_closed_bar_rule(tmp_path: Path) -> None:
    gbp = hourly_bars("2020-01-06 00:00", 48, close=np.arange(48, dtype=float) + 1)
    gbp.to_csv(tmp_path / "GBPUSD_1h.csv")
    bars = hourly_bars("2020-01-06 00:00", 48)
    ind = {"gbp": {"type": "sma", "period": 2, "data_source": "GBPUSD"}}
    hour = indicator_on_hours(strategy([{"provider": "ib", "symbol": "GBPUSD"}], ind),
                              tmp_path, bars, "gbp")
    # Bar t closes with GBPUSD bar t: the mean of GBPUSD closes t and t-1 (t + 0.5).
    assert np.isnan(hour.iloc[0]) and hour.iloc[1:].tolist() == list(np.arange(1, 48) + 0.5)
    four = indicator_on_hours(strategy([{"provider": "ib", "symbol": "GBPUSD",
                                         "timeframe": "4h"}], ind), tmp_path, bars, "gbp")
    # 4h closes 4, 8, 12, ... (resampled from the hourly file); their 2-bar means 6, 10, ...
    assert four[: utc("2020-01-06 06:00")].isna().all()  # 04-08 still open at 07:00
    assert four[utc("2020-01-06 07:00")] == 6.0  # closes with the 04-08 bar
    assert four[utc("2020-01-06 10:00")] == 6.0
    assert four[utc("2020-01-06 11:00")] == 10.0


# --- derived series ------------------------------------------------------------------------------


def test_cot_percentile_is_ktrdrs_rolling_rank() -> None:
    values = np.random.default_rng(2).integers(-50, 50, 200).astype(float)
    got = cot_percentile(values, 52)
    assert np.isnan(got[:51]).all()
    for i in range(51, 200):  # KTRDR: (window values below the latest) / (window - 1) * 100
        window = values[i - 51: i + 1]
        assert got[i] == (window < window[-1]).sum() / 51 * 100
    assert np.isnan(cot_percentile(np.arange(10.0), 52)).all()  # shorter than one window
    assert cot_percentile(np.arange(60.0), 52)[-1] == 100.0


def test_spread_uses_the_dates_both_series_have(tmp_path: Path) -> None:
    write(tmp_path / "fred" / "A.csv", "observation_date,A\n2020-01-01,2.0\n2020-01-02,2.5\n"
          "2020-02-03,3.0\n2020-03-02,.\n")
    write(tmp_path / "fred" / "B.csv", "date,value\n2020-01-01,0.5\n2020-02-01,0.7\n"
          "2020-03-02,1.0\n")
    raw = strategy([{"provider": "fred", "series": ["A", "B"]}],
                   {"s": {"type": "sma", "period": 2, "data_source": "yield_spread_A_B"}})
    series = feat.load_context_series(load_strategy(raw), tmp_path)
    spread = series["yield_spread_A_B"].frame["close"]
    # 2020-02-01 is only in B; on 2020-03-02 A's "." carries 3.0.
    assert spread.to_dict() == {utc("2020-01-01"): 1.5, utc("2020-03-02"): 2.0}
    assert list(series) == ["fred_A", "fred_B", "yield_spread_A_B"]


def test_fred_file_layouts(tmp_path: Path) -> None:
    ours = write(tmp_path / "a.csv", "date,value\n2020-01-02,1.5\n2020-01-01,1.0\n")
    theirs = write(tmp_path / "b.csv", "observation_date,DGS2\n2020-01-01,1.0\n2020-01-02,.\n")
    cache = write(tmp_path / "c.csv", ",close\n2020-01-01,1.0\n2020-01-02,1.5\n")
    assert read_fred(ours, "X").tolist() == [1.0, 1.5]  # sorted by date
    assert read_fred(theirs, "DGS2").tolist() == [1.0, 1.0]
    assert read_fred(cache, "X").tolist() == [1.0, 1.5]
    bad = write(tmp_path / "d.csv", "date,value\n2020-01-01,1.0\n2020-01-02,n/a\n")
    with pytest.raises(DataError, match=r"d.csv: line 3: value 'n/a' is not a number"):
        read_fred(bad, "X")
    clash = write(tmp_path / "e.csv", "date,value\n2020-01-01,1.0\n2020-01-01,2.0\n")
    with pytest.raises(DataError, match="2020-01-01 appears twice with different values"):
        read_fred(clash, "X")
    wrong = write(tmp_path / "f.csv", "day,rate\n2020-01-01,1.0\n")
    with pytest.raises(DataError, match=r"expected date,value \(or observation_date,X\)"):
        read_fred(wrong, "X")


# --- missing files, the data root boundary, bad entries ------------------------------------------


@pytest.mark.parametrize(("entry", "source", "message"), [
    ({"provider": "fred", "series": ["DGS2"]}, "fred_DGS2",
     r"context_data\[0\] \(fred\): missing file .*fred/DGS2.csv; add it as a CSV with columns "
     r"date,value \(or FRED's download: observation_date,DGS2\)"),
    ({"provider": "cftc_cot", "report": "JPY"}, "cot_JPY_net_pct",
     r"context_data\[0\] \(cftc_cot\): missing file .*cot/JPY.csv; add it as a CSV with columns "
     r"date,net_position"),
    ({"provider": "ib", "symbol": "GBPUSD", "timeframe": "1d"}, "GBPUSD",
     r"context_data\[0\] \(ib\): no price file for GBPUSD .* Add GBPUSD_1d.csv .*\(a price "
     r"file: a time column, open, high, low, close and optional volume\)"),
])  # fmt: skip
def test_a_missing_file_names_the_file_to_add(tmp_path: Path, entry: dict, source: str,
                                              message: str) -> None:
    s = load_strategy(strategy([entry], {"x": {"type": "sma", "period": 2,
                                               "data_source": source}}))
    with pytest.raises(DataError, match=message):
        feat.load_context_series(s, tmp_path)


def test_context_files_stay_under_the_data_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "DGS2.csv", "date,value\n2020-01-01,1.0\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "fred").symlink_to(outside)
    s = load_strategy(strategy([{"provider": "fred", "series": "DGS2"}],
                               {"x": {"type": "sma", "period": 2, "data_source": "fred_DGS2"}}))
    with pytest.raises(DataError, match="escapes the data root"):
        feat.load_context_series(s, root)
    with pytest.raises(StrategyError, match=r"context_data\[0\].series: '\.\./DGS2'"):
        load_strategy(strategy([{"provider": "fred", "series": "../DGS2"}], {}))


def test_every_context_error_is_reported_at_once() -> None:
    raw = strategy(
        [{"provider": "bloomberg", "symbol": "X"}, {"provider": "cftc_cot", "report": "EURO"},
         {"provider": "fred"}, {"provider": "ib", "symbol": "GBPUSD", "timeframe": "1hour",
                                "publication_lag": -1}, {"provider": "ib", "symbol": "GBPUSD"}],
        {"a": {"type": "rsi", "data_source": "fred_DGS10"}, "b": {"type": "rsi"}})
    with pytest.raises(StrategyError) as info:
        load_strategy(raw)
    errors = info.value.errors
    expected = [
        "context_data[0].provider: 'bloomberg' is not a provider; allowed: ib, fred, cftc_cot",
        "context_data[1].report: 'EURO' is not a report; allowed: EUR, GBP, JPY",
        "context_data[2].series: None; required for fred",
        "context_data[3].timeframe: '1hour' is not allowed",
        "context_data[3].publication_lag: -1 is not allowed",
        "indicators.a.data_source: 'fred_DGS10' is not a context source; context_data gives: "
        "GBPUSD",
    ]
    for start in expected:
        assert any(e.startswith(start) for e in errors), (start, errors)
    assert len(errors) == len(expected), errors
    no_context = strategy([], {"a": {"type": "rsi", "data_source": "GBPUSD"}})
    with pytest.raises(StrategyError, match="no context_data entry gives it"):
        load_strategy(no_context)


def test_duplicate_source_ids_are_refused() -> None:
    raw = strategy([{"provider": "fred", "series": ["A", "B"]}, {"provider": "fred",
                                                                 "series": "A"}], {})
    with pytest.raises(StrategyError, match=r"context_data\[1\]: gives source id 'fred_A' again"):
        load_strategy(raw)


def test_an_ohlc_indicator_on_a_close_only_series_names_it(tmp_path: Path) -> None:
    write(tmp_path / "fred" / "R.csv", "date,value\n2020-01-01,1.0\n2020-01-02,1.1\n")
    s = load_strategy(strategy([{"provider": "fred", "series": "R"}],
                               {"atr": {"type": "atr", "data_source": "fred_R"}}))
    with pytest.raises(FeatureError, match=r"indicators atr on data_source fred_R .*'high'.*; "
                                           r"that series has only close, so use an indicator"):
        feat.compute_context_indicators(s, feat.load_context_series(s, tmp_path))


def test_synthetic_root_reads_back(tmp_path: Path) -> None:
    """The generated files are read by the same readers a user's files go through."""
    from synthetic_data import write_data_root

    root = write_data_root(tmp_path / "data")
    assert len(read_price_file(root / "GBPUSD_1h.csv")) == 5000
    dgs2 = read_fred(root / "fred" / "DGS2.csv", "DGS2")
    assert not dgs2.isna().any() and len(dgs2) > 1000
