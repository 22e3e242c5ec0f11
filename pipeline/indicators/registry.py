"""The 31 indicator types KTRDR registers, looked up as KTRDR looks them up, and computed into
the columns fuzzy sets and raw inputs refer to (spec section 3).

Lookup: the ``type`` is lowercased and matched against canonical names and aliases, nothing
else (KTRDR refuses ``bollinger`` or ``williams_r``; so do we, so a file that loads here loads
there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.indicators import averages, momentum, trend, volatility, volume
from pipeline.indicators.spec import IndicatorSpec, InvalidParameter

SPECS: tuple[IndicatorSpec, ...] = (
    *averages.SPECS, *trend.SPECS, *momentum.SPECS, *volatility.SPECS, *volume.SPECS,
)

_LOOKUP: dict[str, IndicatorSpec] = {
    key: spec for spec in SPECS for key in (spec.name, *spec.aliases)
}


def indicator_spec(type_name: Any) -> IndicatorSpec | None:
    """The spec for a strategy's ``type`` (case ignored, aliases known), or None if unknown."""
    if not isinstance(type_name, str):
        return None
    return _LOOKUP.get(type_name.strip().lower())


def indicator_names() -> list[str]:
    """Canonical names, sorted, for "allowed: ..." error messages."""
    return sorted(spec.name for spec in SPECS)


def _spec_or_error(type_name: Any, where: str) -> IndicatorSpec:
    spec = indicator_spec(type_name)
    if spec is None:
        raise ValueError(f"{where}{type_name!r} is not an indicator type; "
                         f"allowed: {', '.join(indicator_names())}")
    return spec


def compute_indicator(
    bars: pd.DataFrame, type_name: str, params: Mapping[str, Any]
) -> pd.DataFrame:
    """One indicator on ``bars``: a frame with one column per output ("value" if single).

    Parameters are checked as the strategy loader checks them (``InvalidParameter``, a
    ``ValueError``, names the parameter and what is allowed); undeclared ones are ignored.
    """
    return _spec_or_error(type_name, "").compute(bars, params)


def compute_indicators(bars: pd.DataFrame,
                       indicators: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """All of a strategy's indicators as one frame, columns named as fuzzy sets refer to them.

    Single output: ``{id}``. Multi output: ``{id}`` (the primary output) then ``{id}.{output}``
    for each output the parameters produce (KTRDR's names).
    """
    columns: dict[str, np.ndarray] = {}
    for indicator_id, config in indicators.items():
        spec = _spec_or_error(config.get("type"), f"indicators.{indicator_id}.type: ")
        try:
            params = spec.resolve(config)
        except InvalidParameter as exc:
            raise ValueError(f"indicators.{indicator_id}.{exc}") from exc
        result = spec.formula(bars, **params)
        names = spec.outputs_for(params)
        if not names:
            columns[indicator_id] = result["value"]
            continue
        # A copy, so no two columns share memory behind pandas' back.
        columns[indicator_id] = result[names[0]].copy()
        for output in names:
            columns[f"{indicator_id}.{output}"] = result[output]
    # Every array is new and writable; copying them into one block would cost more than the
    # formulas themselves at a million bars.
    return pd.DataFrame(columns, index=bars.index, dtype=np.float64, copy=False)
