"""Context labels: was the next ``horizon`` bars' return bullish, bearish or neutral.

KTRDR's ``ContextLabeler.label`` (grammar doc section 3.6): r = (C[t+h] - C[t]) / C[t];
0 BULLISH if r > bullish_threshold, 1 BEARISH if r < bearish_threshold (checked second, so it
wins if the thresholds cross), else 2 NEUTRAL. The last ``horizon`` bars have no label.
KTRDR's backtest treats these models as non-trading; the metadata says so through
``output_type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.labels.base import LabelResult, LabelSource, Param, classes_from
from pipeline.labels.forward_return import checked_close, forward_returns

BULLISH, BEARISH, NEUTRAL = 0, 1, 2
CLASS_NAMES = ("BULLISH", "BEARISH", "NEUTRAL")


def _label(bars: pd.DataFrame, params: Mapping[str, Any]) -> LabelResult:
    horizon = params["horizon"]
    ret = forward_returns(checked_close(bars, "context", horizon), horizon)
    classes = np.full(len(ret), NEUTRAL, dtype=np.int64)
    classes[ret > params["bullish_threshold"]] = BULLISH
    classes[ret < params["bearish_threshold"]] = BEARISH
    valid = ~np.isnan(ret)
    return LabelResult(values=classes_from(classes, valid), valid=valid)


SOURCE = LabelSource(
    name="context",
    params=(
        Param("horizon", 5, "int", ">= 1", lambda x: x >= 1),
        Param("bullish_threshold", 0.005, "float"),
        Param("bearish_threshold", -0.005, "float"),
    ),
    label=_label,
    classes=CLASS_NAMES,
    output_type="context_classification",
    describe=lambda p: (f"context over {p['horizon']} bars (bullish > "
                        f"{p['bullish_threshold']:g}, bearish < {p['bearish_threshold']:g})"),
)
