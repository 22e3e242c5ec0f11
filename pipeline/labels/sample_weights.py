"""Uniqueness weights for labels whose holding windows overlap (triple barrier).

A label active over bars [t, t + hold) shares each bar with the other labels active there;
its weight is the mean over its bars of 1 / concurrency, normalised to mean 1 (KTRDR's
``compute_uniqueness_weights(normalize=True)``). Concurrency is counted on bar positions, so a
CUSUM-filtered set of labels is weighed by the bars it really spans (KTRDR counts positions in
the filtered list; the two agree without the filter). Vectorized with prefix sums.
"""

from __future__ import annotations

import numpy as np


def uniqueness_weights(positions: np.ndarray, hold: np.ndarray, normalize: bool = True
                       ) -> np.ndarray:
    """Weights for labels at bar ``positions`` (ascending) active for ``hold`` bars each."""
    positions = np.asarray(positions, dtype=np.int64)
    hold = np.asarray(hold, dtype=np.int64)
    if len(positions) == 0:
        return np.zeros(0, dtype=np.float64)
    if (hold < 1).any():
        raise ValueError("every holding period must be at least one bar")
    ends = positions + hold
    size = int(ends.max())
    delta = np.bincount(positions, minlength=size + 1) - np.bincount(ends, minlength=size + 1)
    concurrency = np.cumsum(delta[:size]).astype(np.float64)
    inverse = np.divide(1.0, concurrency, out=np.zeros(size), where=concurrency > 0)
    prefix = np.concatenate(([0.0], np.cumsum(inverse)))
    weights = (prefix[ends] - prefix[positions]) / hold
    if normalize:
        mean = weights.mean()
        if mean > 0:
            weights = weights / mean
    return weights
