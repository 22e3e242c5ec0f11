"""Forward-return regression targets: (close[t+h] - close[t]) / close[t].

KTRDR's ``ForwardReturnLabeler`` (grammar doc section 3.4). The last ``horizon`` bars have no
target. Models trained on these have one output and a regression loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.labels.base import LabelResult, LabelSource, Param


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """Per-bar return over the next ``horizon`` bars; NaN for the last ``horizon`` bars."""
    close = np.asarray(close, dtype=np.float64)
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        out[:-horizon] = (close[horizon:] - close[:-horizon]) / close[:-horizon]
    return out


def checked_close(bars: pd.DataFrame, source: str, horizon: int) -> np.ndarray:
    """The close column, refusing what would divide by zero or leave nothing to label."""
    if "close" not in bars.columns:
        raise DataError(f"{source} labels need a close column")
    close = bars["close"].to_numpy(np.float64)
    zero = np.flatnonzero(close == 0)
    if zero.size:
        raise DataError(f"{source} labels: close is 0 at bar {int(zero[0])} "
                        f"({zero.size} such bars); a return needs a non-zero close")
    return close


def _label(bars: pd.DataFrame, params: Mapping[str, Any]) -> LabelResult:
    horizon = params["horizon"]
    close = checked_close(bars, "forward_return", horizon)
    if len(close) < horizon + 1:
        raise DataError(f"forward_return labels need at least horizon + 1 = {horizon + 1} "
                        f"bars, got {len(close)}")
    values = forward_returns(close, horizon)
    valid = np.zeros(len(close), dtype=bool)
    valid[:-horizon] = True
    return LabelResult(values=values, valid=valid)


SOURCE = LabelSource(
    name="forward_return",
    params=(Param("horizon", 20, "int", ">= 1", lambda x: x >= 1),),
    label=_label,
    classes=(),
    output_type="regression",
    describe=lambda p: f"forward return over {p['horizon']} bars",
)
