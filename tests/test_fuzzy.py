"""Fuzzy memberships: KTRDR's edge rules at every corner, NaN handling, and column naming."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.fuzzy import (
    MEMBERSHIP_PARAM_COUNTS,
    compute_fuzzy,
    gaussian,
    membership,
    trapezoidal,
    triangular,
)


def at(fn, x: float, *params: float) -> float:
    return float(fn(np.array([x]), *params)[0])


@pytest.mark.parametrize(
    ("x", "expected"), [(-5, 0), (0, 0), (10, 0.5), (20, 1), (25, 0.5), (30, 0), (40, 0)]
)
def test_triangular_corners_and_edges(x: float, expected: float) -> None:
    assert at(triangular, x, 0, 20, 30) == pytest.approx(expected)


def test_triangular_peak_wins_on_a_left_shoulder() -> None:
    # [0, 0, 20]: x == b is tested first, so the shoulder is 1 at 0 (not 0 from x <= a).
    assert at(triangular, 0, 0, 0, 20) == 1
    assert at(triangular, 5, 0, 0, 20) == pytest.approx(0.75)
    assert at(triangular, -1, 0, 0, 20) == 0


def test_triangular_has_no_open_right_shoulder() -> None:
    assert at(triangular, 100, 60, 75, 100) == 0
    assert at(triangular, 75, 60, 75, 100) == 1
    assert at(triangular, 150, 60, 75, 100) == 0
    assert at(triangular, 100, 60, 100, 100) == 1  # x == b still wins when b == c


@pytest.mark.parametrize(
    ("x", "expected"),
    [(0, 0), (5, 0.5), (10, 1), (15, 1), (20, 1), (25, 0.5), (30, 0), (35, 0)],
)
def test_trapezoidal_corners_and_edges(x: float, expected: float) -> None:
    assert at(trapezoidal, x, 0, 10, 20, 30) == pytest.approx(expected)


def test_trapezoidal_zero_test_wins_at_a_shoulder() -> None:
    assert at(trapezoidal, 0, 0, 0, 20, 30) == 0  # x <= a beats "1 on [b, c]"
    assert at(trapezoidal, 0.001, 0, 0, 20, 30) == 1
    assert at(trapezoidal, 30, 0, 10, 30, 30) == 0


def test_gaussian_at_mu_and_one_sigma() -> None:
    assert at(gaussian, 50, 50, 10) == 1
    assert at(gaussian, 60, 50, 10) == pytest.approx(math.exp(-0.5))
    assert at(gaussian, 40, 50, 10) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="sigma"):
        gaussian(np.array([1.0]), 0, 0)


@pytest.mark.parametrize(
    ("kind", "params"),
    [("triangular", [0, 20, 35]), ("trapezoidal", [0, 0, 20, 30]), ("gaussian", [50, 10])],
)
def test_nan_in_nan_out_and_vectorized(kind: str, params: list[float]) -> None:
    x = np.array([np.nan, 0.0, 10.0, np.nan, 30.0, 50.0])
    out = membership(x, kind, params)
    assert out.shape == x.shape and out.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(out), np.isnan(x))
    scalar = [at(lambda v, *p: membership(v, kind, p), v, *params) for v in x[~np.isnan(x)]]
    np.testing.assert_array_equal(out[~np.isnan(x)], scalar)


def test_membership_checks_kind_and_count() -> None:
    assert MEMBERSHIP_PARAM_COUNTS == {"triangular": 3, "trapezoidal": 4, "gaussian": 2}
    assert membership(np.array([20.0]), "Triangular", [0, 20, 35])[0] == 1
    with pytest.raises(ValueError, match="allowed: triangular"):
        membership(np.array([1.0]), "sigmoid", [1, 2])
    with pytest.raises(ValueError, match="needs 3 parameters, got 2"):
        membership(np.array([1.0]), "triangular", [1, 2])


finite = st.floats(-1e6, 1e6, allow_nan=False)


def spec_triangular(x: float, a: float, b: float, c: float) -> float:
    """Spec section 4 read literally, one value at a time: the oracle for the fast version."""
    if x == b:
        return 1.0
    if x <= a or x >= c:
        return 0.0
    return (x - a) / (b - a) if x < b else (c - x) / (c - b)


def spec_trapezoidal(x: float, a: float, b: float, c: float, d: float) -> float:
    if x <= a or x >= d:
        return 0.0
    if b <= x <= c:
        return 1.0
    return (x - a) / (b - a) if x < b else (d - x) / (d - c)


# Parameters drawn from a few values so that shared corners (a == b, b == c, ...) and x on a
# corner are common, not one-in-a-billion.
corner = st.sampled_from([-10.0, 0.0, 0.1, 20.0, 35.0, 100.0])


@given(xs=st.lists(st.one_of(corner, finite), min_size=1, max_size=20),
       p=st.lists(corner, min_size=4, max_size=4))
def test_fast_memberships_equal_the_spec_rules_exactly(xs: list[float], p: list[float]) -> None:
    a, b, c, d = sorted(p)
    x = np.array(xs)
    assert triangular(x, a, b, c).tolist() == [spec_triangular(v, a, b, c) for v in xs]
    assert trapezoidal(x, a, b, c, d).tolist() == [spec_trapezoidal(v, a, b, c, d) for v in xs]


@given(x=finite, p=st.lists(finite, min_size=4, max_size=4))
def test_degrees_stay_in_unit_interval(x: float, p: list[float]) -> None:
    a, b, c, d = sorted(p)
    for value in (at(triangular, x, a, b, c), at(trapezoidal, x, a, b, c, d)):
        assert 0.0 <= value <= 1.0


def test_compute_fuzzy_names_columns_in_order() -> None:
    index = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    frame = pd.DataFrame(
        {"rsi_14": [np.nan, 10.0, 50.0, 90.0], "macd": [0.0] * 4,
         "macd.histogram": [-1.0, 0.0, 1.0, np.nan]},
        index=index,
    )
    sets = {
        "rsi_fast": {"indicator": "rsi_14", "memberships": [
            {"name": "oversold", "type": "triangular", "parameters": [0, 20, 35]},
            {"name": "neutral", "type": "trapezoidal", "parameters": [30, 40, 60, 70]},
            {"name": "overbought", "type": "triangular", "parameters": [65, 80, 100]},
        ]},
        "hist": {"indicator": "macd.histogram", "memberships": [
            {"name": "bull", "type": "gaussian", "parameters": [1, 0.5]},
        ]},
    }
    out = compute_fuzzy(frame, sets)
    assert list(out.columns) == [
        "rsi_fast_oversold", "rsi_fast_neutral", "rsi_fast_overbought", "hist_bull",
    ]
    assert out.index.equals(index) and (out.dtypes == np.float64).all()
    assert out["rsi_fast_oversold"].isna().tolist() == [True, False, False, False]
    assert out["rsi_fast_oversold"].iloc[1] == pytest.approx(0.5)
    assert out["rsi_fast_neutral"].iloc[2] == 1
    assert out["hist_bull"].iloc[2] == 1 and np.isnan(out["hist_bull"].iloc[3])


def test_compute_fuzzy_names_a_missing_indicator() -> None:
    frame = pd.DataFrame({"rsi_14": [1.0]})
    sets = {"s": {"indicator": "rsi_7", "memberships": []}}
    with pytest.raises(KeyError, match="fuzzy_sets.s.indicator: 'rsi_7'"):
        compute_fuzzy(frame, sets)
