"""Price data on the real bundled files and real files in tmp_path: reading, finding, resampling,
and multi-timeframe alignment that never lets a bar see another bar before that one has closed."""

from __future__ import annotations

import hashlib
import os
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import DataError
from pipeline.market_data import (
    align_to_base,
    default_data_root,
    find_price_file,
    list_price_files,
    load_prices,
    read_price_file,
    resample_bars,
    timeframe_delta,
)

ROOT = default_data_root()
COLUMNS = ["open", "high", "low", "close", "volume"]
HEADER = "Date,Open,High,Low,Close,Volume\n"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_standard(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "timestamp"
    assert str(frame.index.tz) == "UTC"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique


# --- the bundled files ---------------------------------------------------------------------------

BUNDLED = [
    ("EURUSD_1h.csv", 5000, "2017-04-19 09:00", "2018-02-07 15:00",
     (1.0716, 1.0722, 1.07083, 1.07219, 1413)),
    ("GOOG_1d.csv", 2148, "2004-08-19", "2013-03-01", (100.0, 104.06, 95.96, 100.34, 22351900)),
    ("SP500_1d.csv", 5031, "1999-01-04", "2018-12-31",
     (1229.22998, 1248.810059, 1219.099976, 1228.099976, 877000000)),
    ("NASDAQ_1d.csv", 5031, "1999-01-04", "2018-12-31",
     (2207.540039, 2233.570068, 2192.679932, 2208.050049, 936660000)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "bars", "first", "last", "row0"), BUNDLED)
def test_each_bundled_csv_loads_unchanged(
    name: str, bars: int, first: str, last: str, row0: tuple[float, ...]
) -> None:
    frame = read_price_file(ROOT / name)
    assert_standard(frame)
    assert len(frame) == bars
    assert frame.index[0] == utc(first) and frame.index[-1] == utc(last)
    assert frame.iloc[0].tolist() == pytest.approx(list(row0), rel=1e-12)


def test_bundled_files_are_the_provenance_bytes() -> None:
    """The package data must be the raw files PROVENANCE.md lists, not an edited copy."""
    text = (ROOT / "PROVENANCE.md").read_text()
    for name, *_ in BUNDLED:
        digest = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in text


def test_month_first_dates_are_read_as_month_first() -> None:
    sp500 = read_price_file(ROOT / "SP500_1d.csv")
    assert sp500.index[0] == utc("1999-01-04")  # "1/4/1999" is January 4
    assert sp500.index[1] == utc("1999-01-05")
    assert sp500.loc[utc("2018-12-28"), "close"] == pytest.approx(2485.73999)
    assert "adj close" not in sp500.columns


def test_month_first_day_above_twelve(tmp_path: Path) -> None:
    text = HEADER + "1/12/2000,1,2,0.5,1.5,10\n12/1/2000,1,2,0.5,1.5,10\n"
    frame = read_price_file(write(tmp_path / "X_1d.csv", text))
    assert frame.index.tolist() == [utc("2000-01-12"), utc("2000-12-01")]


def test_list_and_find_bundled() -> None:
    listed = [(sym, tf, path.name) for sym, tf, path in list_price_files(ROOT)]
    assert listed == [
        ("EURUSD", "1h", "EURUSD_1h.csv"),
        ("GOOG", "1d", "GOOG_1d.csv"),
        ("NASDAQ", "1d", "NASDAQ_1d.csv"),
        ("SP500", "1d", "SP500_1d.csv"),
    ]
    assert find_price_file(ROOT, "GOOG", "1d") == ROOT / "GOOG_1d.csv"
    assert find_price_file(ROOT, "GOOG", "1h") is None


# --- layout variants -----------------------------------------------------------------------------


def test_parquet_round_trip_with_index_and_with_column(tmp_path: Path) -> None:
    original = read_price_file(ROOT / "EURUSD_1h.csv")
    original.to_parquet(tmp_path / "EURUSD_1h.parquet")
    pd.testing.assert_frame_equal(read_price_file(tmp_path / "EURUSD_1h.parquet"), original)

    as_column = original.reset_index().rename(columns=str.title)  # Timestamp, Open, ...
    as_column["Timestamp"] = as_column["Timestamp"].dt.tz_localize(None)  # naive = UTC
    as_column.to_parquet(tmp_path / "B_1h.parquet", index=False)
    pd.testing.assert_frame_equal(read_price_file(tmp_path / "B_1h.parquet"), original)


@pytest.mark.parametrize(
    "header",
    [
        "date,open,high,low,close,volume",
        "DATE,OPEN,HIGH,LOW,CLOSE,VOLUME",
        "timestamp,Open,High,Low,Close,Volume",
        "Time,open,HIGH,Low,close,Volume",
        "datetime,open,high,low,close,volume",
        ",open,high,low,close,volume",
        " Date , Open , High , Low , Close , Volume ",
    ],
)
def test_column_name_variants(tmp_path: Path, header: str) -> None:
    text = header + "\n2020-01-02 10:00:00,1,2,0.5,1.5,7\n2020-01-02 11:00:00,1.5,2,1,1.2,8\n"
    frame = read_price_file(write(tmp_path / "X_1h.csv", text))
    assert_standard(frame)
    assert frame.index.tolist() == [utc("2020-01-02 10:00"), utc("2020-01-02 11:00")]
    assert frame.iloc[0].tolist() == [1.0, 2.0, 0.5, 1.5, 7.0]


def test_saved_row_counter_beside_a_time_column_is_ignored(tmp_path: Path) -> None:
    rows = [
        ",timestamp,open,high,low,close",
        "0,2020-01-02 10:00,1,2,0.5,1.5",
        "1,2020-01-02 11:00,1,2,0.5,1.5",
    ]
    text = "\n".join(rows) + "\n"
    frame = read_price_file(write(tmp_path / "X_1h.csv", text))
    assert frame.index.tolist() == [utc("2020-01-02 10:00"), utc("2020-01-02 11:00")]


def test_parquet_with_aware_non_utc_index(tmp_path: Path) -> None:
    original = read_price_file(ROOT / "GOOG_1d.csv").iloc[:10]
    shifted = original.tz_convert("America/New_York")
    shifted.to_parquet(tmp_path / "G_1d.parquet")
    pd.testing.assert_frame_equal(read_price_file(tmp_path / "G_1d.parquet"), original)


def test_aware_times_are_converted_to_utc(tmp_path: Path) -> None:
    text = (
        "timestamp,open,high,low,close,volume\n"
        "2020-01-02T10:00:00+02:00,1,2,0.5,1.5,7\n"
        "2020-01-02T09:00:00Z,1,2,0.5,1.5,7\n"
        "2020-01-02 05:00:00-05:00,1,2,0.5,1.5,7\n"
    )
    frame = read_price_file(write(tmp_path / "X_1h.csv", text))
    assert_standard(frame)
    assert frame.index.tolist() == [utc("2020-01-02 08:00"), utc("2020-01-02 09:00"),
                                    utc("2020-01-02 10:00")]  # fmt: skip


def test_missing_volume_is_zero_and_extra_columns_dropped(tmp_path: Path) -> None:
    text = "Date,Open,High,Low,Close,Adj Close,Note\n2020-01-02,1,2,0.5,1.5,1.4,x\n"
    frame = read_price_file(write(tmp_path / "X_1d.csv", text))
    assert_standard(frame)
    assert frame["volume"].tolist() == [0.0]


def test_unsorted_rows_are_sorted_and_exact_duplicates_dropped(tmp_path: Path) -> None:
    text = HEADER + (
        "2020-01-03,1,2,0.5,1.5,10\n"
        "2020-01-02,1,2,0.5,1.5,10\n"
        "2020-01-03,1,2,0.5,1.5,10\n"
        "\n"
        "2020-01-01,1,2,0.5,1.5,10\n"
    )
    frame = read_price_file(write(tmp_path / "X_1d.csv", text))
    assert frame.index.tolist() == [utc("2020-01-01"), utc("2020-01-02"), utc("2020-01-03")]


def test_same_time_different_values_names_both_lines(tmp_path: Path) -> None:
    rows = ["2020-01-02,1,2,0.5,1.5,10", "2020-01-03,1,2,0.5,1.5,10", "2020-01-02,1,2,0.5,1.6,10"]
    text = HEADER + "\n".join(rows) + "\n"
    path = write(tmp_path / "X_1d.csv", text)
    with pytest.raises(DataError, match=r"X_1d\.csv: lines 2 and 4 both have time 2020-01-02"):
        read_price_file(path)


# --- bad rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("2020-01-03,0,2,0.5,1.5,10", "line 3: open is 0.0"),
        ("2020-01-03,1,2,-0.5,1.5,10", "line 3: low is -0.5"),
        ("2020-01-03,1,2,0.5,-1.5,10", "line 3: close is -1.5"),
        ("2020-01-03,1,0.4,0.5,0.45,10", "line 3: high 0.4 is below low 0.5"),
        ("2020-01-03,1,2,0.5,abc,10", "line 3: close is 'abc', not a number"),
        ("2020-01-03,1,2,0.5,,10", "line 3: close is"),
        ("2020-13-45,1,2,0.5,1.5,10", "line 3: cannot read time '2020-13-45'"),
    ],
)
def test_bad_rows_name_file_line_and_value(tmp_path: Path, row: str, needle: str) -> None:
    path = write(tmp_path / "BAD_1d.csv", HEADER + "2020-01-02,1,2,0.5,1.5,10\n" + row + "\n")
    with pytest.raises(DataError) as caught:
        read_price_file(path)
    assert str(path) in str(caught.value)
    assert needle in str(caught.value)


def test_bad_row_in_parquet_names_the_row(tmp_path: Path) -> None:
    frame = read_price_file(ROOT / "GOOG_1d.csv").iloc[:5].copy()
    frame.iloc[3, frame.columns.get_loc("high")] = -1.0
    frame.to_parquet(tmp_path / "G_1d.parquet")
    with pytest.raises(DataError, match=r"G_1d\.parquet: row 4: high is -1\.0"):
        read_price_file(tmp_path / "G_1d.parquet")


def test_missing_columns_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing close"):
        read_price_file(write(tmp_path / "A_1d.csv", "Date,Open,High,Low\n2020-01-02,1,2,0.5\n"))
    with pytest.raises(DataError, match="no data rows"):
        read_price_file(write(tmp_path / "B_1d.csv", HEADER))
    with pytest.raises(DataError, match="unsupported file type"):
        read_price_file(write(tmp_path / "C_1d.txt", HEADER))


# --- finding and loading -------------------------------------------------------------------------


def test_timeframe_delta() -> None:
    assert timeframe_delta("4h") == pd.Timedelta(hours=4)
    assert timeframe_delta("1w") == pd.Timedelta(days=7)
    assert timeframe_delta("7m") == pd.Timedelta(minutes=7)
    assert timeframe_delta("90m") == pd.Timedelta(hours=1.5)
    assert timeframe_delta("3d") == pd.Timedelta(days=3)
    assert timeframe_delta("2w") == pd.Timedelta(days=14)
    for bad in ("1H", "0m", "1y", "h", "1.5h", "01h", " 1h", None):
        with pytest.raises(DataError, match=r"unknown timeframe .*; write a whole number and a "
                                            r"unit m, h, d or w"):
            timeframe_delta(bad)  # type: ignore[arg-type]


def test_any_timeframe_is_resampled_from_a_finer_file() -> None:
    hourly_bars = read_price_file(ROOT / "EURUSD_1h.csv")
    for timeframe, rule in (("3h", "3h"), ("12h", "12h"), ("2d", "2D")):
        out = load_prices(ROOT, "EURUSD", timeframe)
        assert (out.index.asi8 % timeframe_delta(timeframe).value == 0).all()
        first = out.index[1]  # the first bucket may hold fewer hours (the file starts at 09:00)
        inside = hourly_bars[(hourly_bars.index >= first) & (hourly_bars.index < first
                                                             + pd.Timedelta(rule))]
        assert out.loc[first, "open"] == inside["open"].iloc[0]
        assert out.loc[first, "high"] == inside["high"].max()
        assert out.loc[first, "close"] == inside["close"].iloc[-1]
    two_weeks = load_prices(ROOT, "GOOG", "2w")
    assert (two_weeks.index.day_of_week == 0).all()
    assert (np.diff(two_weeks.index.asi8) % timeframe_delta("2w").value == 0).all()


def test_a_finer_timeframe_is_seen_through_the_bar_that_closed_with_the_base_bar() -> None:
    """5m in a 1h strategy: the 10:00 bar (closes 11:00) sees the 10:55 bar, never 11:00."""
    five = pd.DataFrame(
        {"x": np.arange(36, dtype=float)},
        index=pd.date_range("2020-01-02 10:00", periods=36, freq="5min", tz="UTC"),
    )
    base = pd.date_range("2020-01-02 09:00", periods=5, freq="1h", tz="UTC")
    seen = align_to_base(base, "1h", five, "5m")["x"]
    assert np.isnan(seen.iloc[0])  # 09:00-10:00: no 5m bar has closed yet
    assert seen.tolist()[1:4] == [11.0, 23.0, 35.0]  # 10:55, 11:55, 12:55 bars
    assert seen.iloc[4] == 35.0  # no more 5m bars: the last one carries forward


def test_date_range_is_inclusive() -> None:
    week = load_prices(ROOT, "GOOG", "1d", "2010-01-04", "2010-01-08")
    assert week.index.tolist() == [utc(f"2010-01-{d:02d}") for d in range(4, 9)]
    same = load_prices(ROOT, "GOOG", "1d", date(2010, 1, 4), date(2010, 1, 8))
    pd.testing.assert_frame_equal(same, week)


def test_end_date_means_through_the_end_of_that_day() -> None:
    day = load_prices(ROOT, "EURUSD", "1h", "2017-05-01", "2017-05-01")
    assert len(day) == 24
    assert day.index[0] == utc("2017-05-01 00:00") and day.index[-1] == utc("2017-05-01 23:00")
    early = load_prices(ROOT, "EURUSD", "1h", "2017-05-01", datetime(2017, 5, 1, 5))
    assert early.index[-1] == utc("2017-05-01 05:00")
    aware = load_prices(ROOT, "EURUSD", "1h", "2017-05-01T02:00+02:00", "2017-05-01 05:00")
    assert aware.index[0] == utc("2017-05-01 00:00") and len(aware) == 6


def test_range_errors() -> None:
    with pytest.raises(DataError, match=r"no bars between 1990-01-01 and 1990-12-31.*covers 2004"):
        load_prices(ROOT, "GOOG", "1d", "1990-01-01", "1990-12-31")
    with pytest.raises(DataError, match="is after end"):
        load_prices(ROOT, "GOOG", "1d", "2011-01-01", "2010-01-01")


def test_missing_file_errors_list_what_exists() -> None:
    with pytest.raises(DataError, match=r"EURUSD has only 1h"):
        load_prices(ROOT, "EURUSD", "1m")
    with pytest.raises(DataError, match=r"symbols there: EURUSD, GOOG, NASDAQ, SP500"):
        load_prices(ROOT, "AAPL", "1d")


@pytest.mark.parametrize("symbol", ["../EURUSD", "..\\x", "a/b", "/etc/passwd", "", "x y"])
def test_path_tricks_in_names_are_refused(symbol: str) -> None:
    with pytest.raises(DataError, match="may only contain"):
        load_prices(ROOT, symbol, "1h")
    with pytest.raises(DataError, match="may only contain"):
        find_price_file(ROOT, "EURUSD", "../1h")


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    secret = write(outside / "SECRET_1h.csv", HEADER + "2020-01-02,1,2,0.5,1.5,10\n")
    os.symlink(secret, root / "EVIL_1h.csv")
    with pytest.raises(DataError, match="escapes the data root"):
        load_prices(root, "EVIL", "1h")
    with pytest.raises(DataError, match="escapes the data root"):
        load_prices(root, "EVIL", "4h")  # the resampling path checks its source too
    os.symlink(ROOT / "GOOG_1d.csv", root / "GOOG_1d.csv")
    with pytest.raises(DataError, match="escapes the data root"):
        load_prices(root, "GOOG", "1d")
    # A link that stays inside the root is fine, and so is a data root reached through a link.
    write(root / "REAL_1d.csv", HEADER + "2020-01-02,1,2,0.5,1.5,10\n")
    os.symlink(root / "REAL_1d.csv", root / "ALIAS_1d.csv")
    assert len(load_prices(root, "ALIAS", "1d")) == 1
    os.symlink(ROOT, tmp_path / "linked_root")
    assert len(load_prices(tmp_path / "linked_root", "GOOG", "1d")) == 2148


def test_csv_and_parquet_for_one_name_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "X_1d.csv", HEADER + "2020-01-02,1,2,0.5,1.5,10\n")
    read_price_file(tmp_path / "X_1d.csv").to_parquet(tmp_path / "X_1d.parquet")
    with pytest.raises(DataError, match="X_1d.csv and X_1d.parquet"):
        find_price_file(tmp_path, "X", "1d")


def test_load_records_its_source() -> None:
    assert load_prices(ROOT, "EURUSD", "4h").attrs["source"] == str(ROOT / "EURUSD_1h.csv")


# --- resampling ----------------------------------------------------------------------------------


def hourly(start: str, closes: list[float]) -> pd.DataFrame:
    """Hand-made 1h bars: open = close - 0.1, high = close + 1, low = close - 1, volume = index."""
    index = pd.date_range(start, periods=len(closes), freq="1h", tz="UTC", name="timestamp")
    close = np.asarray(closes, dtype=np.float64)
    return pd.DataFrame(
        {"open": close - 0.1, "high": close + 1, "low": close - 1, "close": close,
         "volume": np.arange(len(close), dtype=np.float64)},
        index=index,
    )  # fmt: skip


def test_resample_1h_to_4h_by_hand() -> None:
    bars = hourly("2020-01-02 00:00", [10, 12, 9, 11, 20, 25, 18, 22])
    out = resample_bars(bars, "4h")
    assert out.index.tolist() == [utc("2020-01-02 00:00"), utc("2020-01-02 04:00")]
    assert out.iloc[0].tolist() == pytest.approx([9.9, 13.0, 8.0, 11.0, 0 + 1 + 2 + 3])
    assert out.iloc[1].tolist() == pytest.approx([19.9, 26.0, 17.0, 22.0, 4 + 5 + 6 + 7])
    assert list(out.columns) == COLUMNS and out.index.name == "timestamp"


def test_final_partial_bucket_is_dropped_first_partial_kept() -> None:
    # 02:00 .. 09:00: bucket 00-04 has 2 closed bars (kept), 04-08 full, 08-12 unfinished (dropped).
    bars = hourly("2020-01-02 02:00", [1, 2, 3, 4, 5, 6, 7, 8])
    out = resample_bars(bars, "4h")
    assert out.index.tolist() == [utc("2020-01-02 00:00"), utc("2020-01-02 04:00")]
    assert out["open"].iloc[0] == pytest.approx(0.9) and out["volume"].iloc[0] == 1.0


def test_empty_buckets_are_dropped() -> None:
    friday, monday = hourly("2020-01-03 20:00", [1, 2, 3, 4]), hourly("2020-01-06 00:00", [5] * 4)
    bars = pd.concat([friday, monday])
    out = resample_bars(bars, "4h")
    assert out.index.tolist() == [utc("2020-01-03 20:00"), utc("2020-01-06 00:00")]


def test_resample_eurusd_matches_an_independent_groupby() -> None:
    hourly_bars = read_price_file(ROOT / "EURUSD_1h.csv")
    for timeframe, rule in (("4h", "4h"), ("1d", "1D")):
        out = load_prices(ROOT, "EURUSD", timeframe)
        groups = hourly_bars.groupby(hourly_bars.index.floor(rule))
        expected = groups.agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
        )
        expected.index.name = "timestamp"
        # The last bucket (2018-02-07) is unfinished for 1d (data ends 15:00) and kept for 4h.
        if timeframe == "1d":
            expected = expected.iloc[:-1]
        pd.testing.assert_frame_equal(out, expected, check_freq=False)
        assert (out.index.asi8 % timeframe_delta(timeframe).value == 0).all()


def test_first_eurusd_4h_bar_by_hand() -> None:
    out = load_prices(ROOT, "EURUSD", "4h")
    # The file starts at 09:00, so the 08:00-12:00 bucket holds the 09, 10 and 11 o'clock bars.
    raw = read_price_file(ROOT / "EURUSD_1h.csv").iloc[:3]
    assert out.index[0] == utc("2017-04-19 08:00")
    assert out.iloc[0].tolist() == [
        raw["open"].iloc[0], raw["high"].max(), raw["low"].min(), raw["close"].iloc[-1],
        raw["volume"].sum(),
    ]  # fmt: skip
    assert out.index[-1] == utc("2018-02-07 12:00")  # 12-16 closed with the 15:00 bar


def test_weekly_bars_start_on_monday() -> None:
    weeks = load_prices(ROOT, "GOOG", "1w")
    assert (weeks.index.day_of_week == 0).all()
    assert weeks.index[0] == utc("2004-08-16")  # the week of Thursday 2004-08-19


def test_resample_refuses_finer_target() -> None:
    with pytest.raises(DataError, match="cannot build 1h bars"):
        resample_bars(read_price_file(ROOT / "GOOG_1d.csv"), "1h")


# --- multi-timeframe alignment -------------------------------------------------------------------


def check_alignment(base_tf: str, frame_tf: str) -> None:
    """Brute force over the whole file: the aligned bar had closed by the base close; the latest."""
    base = read_price_file(ROOT / "EURUSD_1h.csv")
    frame = load_prices(ROOT, "EURUSD", frame_tf)
    tagged = frame.assign(start=frame.index.asi8.astype(np.float64))
    aligned = align_to_base(base.index, base_tf, tagged, frame_tf)
    assert aligned.index.equals(base.index) and list(aligned.columns) == list(tagged.columns)

    base_close = (base.index + timeframe_delta(base_tf)).asi8
    frame_close = (frame.index + timeframe_delta(frame_tf)).asi8
    closed = frame_close[None, :] <= base_close[:, None]  # base rows x frame rows
    latest = np.where(closed.any(axis=1), closed.shape[1] - 1 - np.argmax(closed[:, ::-1], 1), -1)
    seen = aligned["start"].to_numpy()
    assert np.isnan(seen[latest < 0]).all()
    expected_start = frame.index.asi8[latest[latest >= 0]].astype(np.float64)
    assert np.array_equal(seen[latest >= 0], expected_start)
    got = aligned.dropna()
    used_close = got["start"].to_numpy().astype(np.int64) + timeframe_delta(frame_tf).value
    assert (used_close <= (got.index + timeframe_delta(base_tf)).asi8).all()
    pd.testing.assert_frame_equal(
        got[COLUMNS].reset_index(drop=True),
        frame.loc[pd.DatetimeIndex(got["start"].astype(np.int64), tz="UTC"), COLUMNS].reset_index(
            drop=True
        ),
    )


def test_1h_aligned_to_4h_never_sees_an_open_bar() -> None:
    check_alignment("1h", "4h")


def test_1h_aligned_to_1d_never_sees_an_open_bar() -> None:
    check_alignment("1h", "1d")


def test_alignment_by_hand() -> None:
    bars = hourly("2020-01-02 00:00", [10, 12, 9, 11, 20, 25, 18, 22, 30])
    four = resample_bars(bars, "4h", source_timeframe="1h")
    aligned = align_to_base(bars.index, "1h", four, "4h")
    at = aligned["close"]
    # 00:00-03:00 starts: the 1h bar starting 03:00 closes at 04:00, with the 00-04 bar.
    assert at.iloc[:3].isna().all()
    assert np.isnan(at[utc("2020-01-02 02:00")])  # closes 03:00, the 00-04 bar is still open
    assert at[utc("2020-01-02 03:00")] == 11.0
    assert at[utc("2020-01-02 06:00")] == 11.0  # forward-filled until 04-08 closes
    assert at[utc("2020-01-02 07:00")] == 22.0
    assert at[utc("2020-01-02 08:00")] == 22.0  # 08-12 never closed in this data


def test_alignment_on_eurusd_by_hand() -> None:
    base = read_price_file(ROOT / "EURUSD_1h.csv")
    day = load_prices(ROOT, "EURUSD", "1d")
    four = load_prices(ROOT, "EURUSD", "4h")
    a4 = align_to_base(base.index, "1h", four, "4h")
    assert a4.loc[utc("2017-05-02 03:00"), "close"] == four.loc[utc("2017-05-02 00:00"), "close"]
    assert a4.loc[utc("2017-05-02 02:00"), "close"] == four.loc[utc("2017-05-01 20:00"), "close"]
    a1d = align_to_base(base.index, "1h", day, "1d")
    assert a1d.loc[utc("2017-05-02 23:00"), "close"] == day.loc[utc("2017-05-02"), "close"]
    assert a1d.loc[utc("2017-05-02 22:00"), "close"] == day.loc[utc("2017-05-01"), "close"]
    assert a1d.loc[utc("2017-05-02 00:00"), "close"] == day.loc[utc("2017-05-01"), "close"]


def test_alignment_of_an_empty_frame_is_all_nan() -> None:
    index = pd.date_range("2020-01-01", periods=3, freq="1h", tz="UTC")
    empty = pd.DataFrame({"x": np.array([], dtype=float)}, index=pd.DatetimeIndex([], tz="UTC"))
    assert align_to_base(index, "1h", empty, "4h")["x"].isna().all()


@settings(max_examples=60, deadline=None)
@given(
    keep=st.lists(st.booleans(), min_size=1, max_size=200),
    frame_tf=st.sampled_from(["2h", "4h", "1d"]),
)
def test_alignment_with_gaps_never_looks_ahead(keep: list[bool], frame_tf: str) -> None:
    """Session gaps and missing bars: still only bars closed by the base close, the latest one."""
    bars = hourly("2020-01-06 00:00", list(np.linspace(10, 20, len(keep))))[np.array(keep)]
    if bars.empty:
        return
    higher = resample_bars(bars, frame_tf, source_timeframe="1h")
    aligned = align_to_base(bars.index, "1h", higher.assign(start=higher.index), frame_tf)
    closes = higher.index + timeframe_delta(frame_tf)
    for t, seen in zip(bars.index, aligned["start"], strict=True):
        visible = higher.index[closes <= t + pd.Timedelta(hours=1)]
        assert (pd.isna(seen) and len(visible) == 0) or seen == visible[-1]
