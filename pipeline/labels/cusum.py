"""CUSUM event filter: keep only bars where a move of a set size has built up.

KTRDR's ``CUSUMFilter.filter`` (grammar doc section 3.3). The recursion (two running sums that
reset on an event) needs one step per bar; it runs over a Python list of floats, which is
several times faster than indexing numpy scalars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def cusum_threshold(close: np.ndarray, threshold: float, multiplier: float, span: int) -> float:
    """``threshold`` when > 0; otherwise ``multiplier`` x the mean EWM std of log returns."""
    if threshold > 0:
        return float(threshold)
    returns = np.diff(np.log(np.asarray(close, dtype=np.float64)))
    return float(multiplier * pd.Series(returns).ewm(span=span).std().mean())


def cusum_events(close: np.ndarray, threshold: float, multiplier: float, span: int) -> np.ndarray:
    """Boolean per bar: True where the positive or negative CUSUM of log returns passed h.

    S+ = max(0, S+ + (r - h)), S- = min(0, S- + (r + h)); S+ > h is an event at the bar the
    return ends on (and resets S+), else S- < -h is one (and resets S-). Bar 0 is never one.
    """
    close = np.asarray(close, dtype=np.float64)
    h = cusum_threshold(close, threshold, multiplier, span)
    returns = np.diff(np.log(close))
    # r - h and r + h elementwise in numpy round exactly as they would one by one.
    above, below = (returns - h).tolist(), (returns + h).tolist()
    s_pos = s_neg = 0.0
    hits = []
    for i in range(len(above)):
        s_pos += above[i]
        if s_pos < 0.0:
            s_pos = 0.0
        s_neg += below[i]
        if s_neg > 0.0:
            s_neg = 0.0
        if s_pos > h:
            hits.append(i + 1)
            s_pos = 0.0
        elif s_neg < -h:
            hits.append(i + 1)
            s_neg = 0.0
    events = np.zeros(len(close), dtype=bool)
    events[hits] = True
    return events
