"""Fuzzy memberships (spec section 4): KTRDR's exact edge rules, vectorized, NaN in -> NaN out.

The edge rules matter more than they look: a model trained here must see the same 0s and 1s at
the set boundaries as one trained by KTRDR, so each function states the order its tests run in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MEMBERSHIP_PARAM_COUNTS: dict[str, int] = {"triangular": 3, "trapezoidal": 4, "gaussian": 2}


def _as_array(x: np.ndarray | Sequence[float] | float) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def triangular(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Triangle on ``[a, b, c]`` with KTRDR's rules, in this order, the first that holds wins.

    NaN -> NaN; ``x == b`` -> 1 (so the shoulder ``[0, 0, 20]`` is 1 at 0); ``x <= a`` or
    ``x >= c`` -> 0 (no open shoulders: ``[60, 75, 100]`` is 0 at 100); ``x < b`` -> rising
    ``(x - a)/(b - a)``; otherwise falling ``(c - x)/(c - b)``.

    Computed as ``clip(min(rising, falling), 0, 1)``, which gives those exact values (the edge
    that does not apply is >= 1 in floating point too) in three passes instead of a select
    over four masks; only a zero-width edge (0/0 at ``x == b``) needs the peak set again.
    """
    x = _as_array(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (x - a) / (b - a)
        np.minimum(out, (c - x) / (c - b), out=out)
    np.clip(out, 0.0, 1.0, out=out)
    if a == b or b == c:
        out[x == b] = 1.0
    return out


def trapezoidal(x: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """Trapezoid on ``[a, b, c, d]`` with KTRDR's rules, in this order, the first that holds wins.

    NaN -> NaN; ``x <= a`` or ``x >= d`` -> 0 (this wins, so ``[0, 0, 20, 30]`` is 0 at 0);
    ``b <= x <= c`` -> 1; ``x < b`` -> rising ``(x - a)/(b - a)``; otherwise falling
    ``(d - x)/(d - c)``. Computed like :func:`triangular`; a zero-width edge sets the zero
    test again because its 0/0 (or inf) would otherwise survive at ``a`` or ``d``.
    """
    x = _as_array(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (x - a) / (b - a)
        np.minimum(out, (d - x) / (d - c), out=out)
    np.clip(out, 0.0, 1.0, out=out)
    if a == b or c == d:
        out[(x <= a) | (x >= d)] = 0.0
    return out


def gaussian(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """Bell curve ``exp(-0.5 ((x - mu)/sigma)^2)``; NaN propagates by arithmetic."""
    if not sigma > 0:
        raise ValueError(f"gaussian sigma must be > 0, got {sigma}")
    z = (_as_array(x) - mu) / sigma
    return np.exp(-0.5 * z * z)


_FUNCTIONS = {"triangular": triangular, "trapezoidal": trapezoidal, "gaussian": gaussian}


def membership(x: np.ndarray, kind: str, params: Sequence[float]) -> np.ndarray:
    """Membership degree of every ``x`` in one set of ``kind`` (case-insensitive)."""
    key = kind.lower()
    if key not in _FUNCTIONS:
        raise ValueError(f"unknown membership type {kind!r}; allowed: {', '.join(_FUNCTIONS)}")
    if len(params) != MEMBERSHIP_PARAM_COUNTS[key]:
        raise ValueError(
            f"{key} membership needs {MEMBERSHIP_PARAM_COUNTS[key]} parameters, got {len(params)}"
        )
    return _FUNCTIONS[key](x, *(float(p) for p in params))


def compute_fuzzy(
    indicator_frame: pd.DataFrame, fuzzy_sets: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """Every membership of every (already normalised) fuzzy set, as columns ``{set_id}_{name}``.

    Columns follow the sets' and memberships' order, which becomes the model's feature order.
    """
    columns: dict[str, np.ndarray] = {}
    for set_id, config in fuzzy_sets.items():
        source = config["indicator"]
        if source not in indicator_frame.columns:
            known = ", ".join(map(str, indicator_frame.columns))
            raise KeyError(f"fuzzy_sets.{set_id}.indicator: {source!r} not computed; have: {known}")
        x = indicator_frame[source].to_numpy(dtype=np.float64)
        for item in config["memberships"]:
            columns[f"{set_id}_{item['name']}"] = membership(x, item["type"], item["parameters"])
    # Every array is freshly computed here, so the frame may own them without a copy.
    return pd.DataFrame(columns, index=indicator_frame.index, dtype=np.float64, copy=False)
