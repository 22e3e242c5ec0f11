"""ZigZag segment labels: the training target (spec section 6).

Labels look at future prices on purpose: they say what the move from this bar turned out to be.
Encoding: 0 BUY, 1 HOLD, 2 SELL. KTRDR's ``label_lookahead`` is accepted by the strategy loader
and has no effect here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.labels.base import LabelResult, LabelSource, Param

LABEL_NAMES = ("BUY", "HOLD", "SELL")
BUY, HOLD, SELL = 0, 1, 2


def zigzag_pivots(close: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the zigzag pivots, ascending; bar 0 is always one.

    One pass, O(n). The loop runs over a Python list of floats because per-element numpy
    indexing is several times slower and numba is not a dependency (1,000,000 bars ~ 0.3 s).
    """
    values = _checked(close, threshold)
    if not values:
        return np.zeros(0, dtype=np.int64)
    pivots = [0]
    direction = 0  # 0 until the first move of `threshold`, then +1 up leg / -1 down leg
    first = values[0]
    extreme = first
    threshold = float(threshold)
    down, up = 1.0 - threshold, 1.0 + threshold
    for i in range(1, len(values)):
        c = values[i]
        if direction == 1:
            if c > extreme:
                extreme, pivots[-1] = c, i
            elif c <= extreme * down:
                extreme, direction = c, -1
                pivots.append(i)
        elif direction == -1:
            if c < extreme:
                extreme, pivots[-1] = c, i
            elif c >= extreme * up:
                extreme, direction = c, 1
                pivots.append(i)
        elif abs(c - first) / first >= threshold:
            extreme, direction = c, (1 if c > first else -1)
            pivots.append(i)
    return np.asarray(pivots, dtype=np.int64)


def zigzag_labels(close: np.ndarray, threshold: float) -> np.ndarray:
    """Per-bar labels: BUY between a pivot and a higher one, SELL before a lower or equal one.

    Pivot bars and the bars after the last pivot (whose leg has not been confirmed) are HOLD.
    """
    pivots = zigzag_pivots(close, threshold)
    n = len(close)
    labels = np.full(n, HOLD, dtype=np.int64)
    if len(pivots) < 2:
        return labels
    prices = np.asarray(close, dtype=np.float64)[pivots]
    leg = np.where(prices[1:] > prices[:-1], BUY, SELL)
    bars = np.arange(n)
    seg = np.searchsorted(pivots, bars, side="right") - 1
    inside = (seg < len(pivots) - 1) & (bars != pivots[seg])
    labels[inside] = leg[seg[inside]]
    return labels


def _checked(close: np.ndarray, threshold: float) -> list[float]:
    """Closes as floats, refusing what would silently bend the zigzag (NaN compares false)."""
    try:
        ok = math.isfinite(float(threshold)) and 0 < float(threshold) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"zigzag threshold must be a fraction in (0, 1), got {threshold!r}")
    values = np.asarray(close, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"close must be one-dimensional, got shape {values.shape}")
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"close at bar {i} is {float(values[i])!r}; zigzag labels need positive finite closes "
            "(drop or fix that bar before labelling)"
        )
    return values.tolist()


def _label(bars: pd.DataFrame, params: Mapping[str, Any]) -> LabelResult:
    labels = zigzag_labels(bars["close"].to_numpy(np.float64), params["zigzag_threshold"])
    return LabelResult(values=labels, valid=np.ones(len(labels), dtype=bool))


SOURCE = LabelSource(
    name="zigzag",
    params=(
        Param("zigzag_threshold", 0.02, "float", "with 0 < x < 1 (a fraction: 0.02 is 2 %)",
              lambda x: 0 < x < 1),
        Param("label_lookahead", 10, "int", ">= 1", lambda x: x >= 1),
    ),
    label=_label,
    classes=LABEL_NAMES,
    output_type="classification",
    describe=lambda p: f"zigzag at {p['zigzag_threshold']:.2%}",
)
