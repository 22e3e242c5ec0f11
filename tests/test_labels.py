"""ZigZag labels: the exact numbers of spec section 6 on the bundled file, and each rule by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import DataError
from pipeline.labels import LABEL_NAMES, zigzag_labels, zigzag_pivots
from pipeline.market_data import default_data_root, read_price_file

B, H, S = 0, 1, 2


@pytest.fixture(scope="module")
def eurusd_close() -> np.ndarray:
    return read_price_file(default_data_root() / "EURUSD_1h.csv")["close"].to_numpy()


def counts(labels: np.ndarray) -> dict[str, int]:
    return dict(zip(LABEL_NAMES, np.bincount(labels, minlength=3).tolist(), strict=True))


def test_bundled_eurusd_at_2_5_percent(eurusd_close: np.ndarray) -> None:
    assert zigzag_pivots(eurusd_close, 0.025).tolist() == [0, 2444, 3461, 4908]
    labels = zigzag_labels(eurusd_close, 0.025)
    assert labels.dtype == np.int64
    assert counts(labels) == {"BUY": 3889, "HOLD": 95, "SELL": 1016}


def test_bundled_eurusd_at_1_percent(eurusd_close: np.ndarray) -> None:
    labels = zigzag_labels(eurusd_close, 0.01)
    assert counts(labels) == {"BUY": 2819, "HOLD": 35, "SELL": 2146}
    assert len(zigzag_pivots(eurusd_close, 0.01)) == 35  # no bars after the last pivot


def test_reversal_at_exactly_the_threshold() -> None:
    # 100 -> 125 is +25 % (first pivot, up); 93.75 == 125 * 0.75 reverses exactly at the threshold.
    close = np.array([100.0, 110.0, 125.0, 120.0, 93.75, 100.0])
    assert zigzag_pivots(close, 0.25).tolist() == [0, 2, 4]
    assert zigzag_labels(close, 0.25).tolist() == [H, B, H, S, H, H]


def test_just_short_of_the_threshold_is_no_reversal() -> None:
    close = np.array([100.0, 125.0, 93.76])
    assert zigzag_pivots(close, 0.25).tolist() == [0, 1]
    assert zigzag_labels(close, 0.25).tolist() == [H, H, H]


def test_down_leg_mirrors_and_reverses_at_exact_threshold() -> None:
    # 80 is only -20 %; 70 (-30 %) is the first pivot, down; 87.5 == 70 * 1.25 reverses exactly,
    # and the higher 90 then moves that new pivot forward.
    close = np.array([100.0, 80.0, 70.0, 87.5, 90.0])
    assert zigzag_pivots(close, 0.25).tolist() == [0, 2, 4]
    assert zigzag_labels(close, 0.25).tolist() == [H, S, H, B, H]
    assert zigzag_pivots(close[:4], 0.25).tolist() == [0, 2, 3]
    assert zigzag_pivots(np.array([100.0, 70.0, 87.49]), 0.25).tolist() == [0, 1]


def test_higher_close_moves_the_pivot_equal_close_does_not() -> None:
    close = np.array([100.0, 125.0, 125.0, 130.0, 130.0, 90.0])
    assert zigzag_pivots(close, 0.25).tolist() == [0, 3, 5]
    assert zigzag_labels(close, 0.25).tolist() == [H, B, B, H, S, H]


def test_equal_close_in_a_down_leg_does_not_move_the_pivot() -> None:
    close = np.array([100.0, 70.0, 70.0, 100.0])
    assert zigzag_pivots(close, 0.25).tolist() == [0, 1, 3]


def test_first_direction_compares_with_bar_zero_not_the_previous_bar() -> None:
    # Each step is under 25 %, but bar 3 is 26 % above bar 0.
    close = np.array([100.0, 110.0, 120.0, 126.0])
    assert zigzag_pivots(close, 0.25).tolist() == [0, 3]
    assert zigzag_labels(close, 0.25).tolist() == [H, B, B, H]


def test_no_move_ever_is_all_hold() -> None:
    flat = np.full(50, 1.2345)
    assert zigzag_pivots(flat, 0.01).tolist() == [0]
    assert zigzag_labels(flat, 0.01).tolist() == [H] * 50
    wiggle = 100.0 + np.sin(np.arange(200))  # +-1 %, threshold 5 %
    assert set(zigzag_labels(wiggle, 0.05).tolist()) == {H}


def test_empty_and_single_bar() -> None:
    assert zigzag_pivots(np.array([]), 0.1).tolist() == []
    assert zigzag_labels(np.array([]), 0.1).tolist() == []
    assert zigzag_labels(np.array([5.0]), 0.1).tolist() == [H]


def test_accepts_lists_and_pandas() -> None:
    import pandas as pd

    close = [100.0, 125.0, 90.0]
    expected = [H, H, H]
    assert zigzag_labels(close, 0.25).tolist() == expected
    assert zigzag_labels(pd.Series(close), 0.25).tolist() == expected


@pytest.mark.parametrize("bad", [np.nan, 0.0, -1.0, np.inf])
def test_bad_close_is_a_data_error_naming_the_bar(bad: float) -> None:
    with pytest.raises(DataError, match="bar 2"):
        zigzag_labels(np.array([1.0, 1.1, bad]), 0.02)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.0, float("nan"), "x"])
def test_bad_threshold(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        zigzag_pivots(np.array([1.0, 2.0]), threshold)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.floats(-0.05, 0.05), min_size=1, max_size=300),
    threshold=st.sampled_from([0.01, 0.02, 0.05]),
)
def test_legs_alternate_and_each_move_reaches_the_threshold(
    steps: list[float], threshold: float
) -> None:
    close = 100.0 * np.exp(np.cumsum(steps))
    pivots = zigzag_pivots(close, threshold)
    labels = zigzag_labels(close, threshold)
    assert pivots[0] == 0 and np.all(np.diff(pivots) > 0)
    moves = close[pivots[1:]] / close[pivots[:-1]] - 1.0
    assert np.all(np.abs(moves) >= threshold * (1 - 1e-9))
    assert np.all(np.sign(moves[1:]) != np.sign(moves[:-1]))
    assert np.all(labels[pivots] == H)
    assert np.all(labels[pivots[-1] :] == H)
    for a, b in zip(pivots[:-1], pivots[1:], strict=True):
        assert np.all(labels[a + 1 : b] == (B if close[b] > close[a] else S))
