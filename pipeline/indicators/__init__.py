"""Technical indicators: KTRDR's 31 indicator types, their parameters and formulas.

A strategy names indicators by ``type`` plus parameters; the registry maps that name to one
vectorized formula. Names, parameters (types, bounds, defaults), outputs and formulas are
KTRDR's, so a model trained here sees the same features as one trained there, except where
KTRDR has a defect (docs/differences.md). Modules: ``spec`` (what a type declares),
``registry`` (lookup and the feature columns), and the formulas by family: ``averages``,
``trend``, ``momentum``, ``volatility``, ``volume``.
"""

from pipeline.indicators.registry import (
    SPECS,
    compute_indicator,
    compute_indicators,
    indicator_names,
    indicator_spec,
)
from pipeline.indicators.spec import PRICE_COLUMNS, IndicatorSpec, InvalidParameter, ParamSpec

__all__ = [
    "PRICE_COLUMNS",
    "SPECS",
    "IndicatorSpec",
    "InvalidParameter",
    "ParamSpec",
    "compute_indicator",
    "compute_indicators",
    "indicator_names",
    "indicator_spec",
]
