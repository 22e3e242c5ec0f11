"""Label sources: the training target, one module per source, found by name.

``training.labels.source`` names a :class:`~pipeline.labels.base.LabelSource` in
:data:`SOURCES`. Each takes the base-timeframe bars of one symbol and returns a label per bar
and which bars have one (:class:`~pipeline.labels.base.LabelResult`); features are kept for
exactly those bars, so a CUSUM filter or an unlabelled tail drops feature rows and labels
together. Adding a source is one module that defines ``SOURCE`` and one line below.

Labels look at future prices on purpose: they say what the move from this bar turned out to be.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.labels import context, forward_return, regime, triple_barrier, zigzag
from pipeline.labels.base import (
    REGRESSION,
    LabelResult,
    LabelSource,
    Param,
    ResolvedParams,
    resolve_params,
)
from pipeline.labels.purged import purged_split
from pipeline.labels.zigzag import BUY, HOLD, LABEL_NAMES, SELL, zigzag_labels, zigzag_pivots

SOURCES: dict[str, LabelSource] = {
    s.SOURCE.name: s.SOURCE for s in (zigzag, triple_barrier, forward_return, regime, context)
}

__all__ = [
    "BUY", "HOLD", "LABEL_NAMES", "REGRESSION", "SELL", "SOURCES", "LabelResult", "LabelSource",
    "Param", "ResolvedParams", "get_source", "make_labels", "pair_with_rows", "purged_split",
    "resolve_params",
    "zigzag_labels", "zigzag_pivots",
]


def get_source(name: str) -> LabelSource:
    """The registered source called ``name``; a ValueError lists the ones there are."""
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown label source {name!r}; allowed: {', '.join(SOURCES)}") from None


def make_labels(bars: pd.DataFrame, labels_cfg: Mapping[str, Any]) -> LabelResult:
    """Label one symbol's base-timeframe bars with the validated ``training.labels`` mapping."""
    return get_source(labels_cfg.get("source", "zigzag")).label(bars, labels_cfg)


def pair_with_rows(result: LabelResult, bars_index: pd.Index, rows_index: pd.Index
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Match labels to feature rows by timestamp: (rows to keep, their labels, their weights).

    ``rows_index`` (feature rows, warm-up dropped) is a subset of ``bars_index`` (the bars
    that were labelled). A row is kept when its bar has a label, so the feature row of bar j
    always carries label j, whatever bars lack one (an unlabelled tail, CUSUM non-events).
    """
    at = bars_index.get_indexer(rows_index)
    if (at < 0).any():
        raise ValueError("every feature row must be a labelled bar's timestamp")
    keep = result.valid[at]
    rows = at[keep]
    weights = result.weights[rows] if result.weights is not None else None
    return keep, result.values[rows], weights
