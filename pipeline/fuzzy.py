"""Fuzzy memberships (spec section 4): KTRDR's exact edge rules, vectorized, NaN in -> NaN out."""

from __future__ import annotations

MEMBERSHIP_PARAM_COUNTS: dict[str, int] = {"triangular": 3, "trapezoidal": 4, "gaussian": 2}
