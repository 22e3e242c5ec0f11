"""What one indicator type declares: its parameters (type, default, bounds) and its outputs.

These declarations are the single source of parameter rules: the strategy loader reports a
bad value with ``ParamSpec.allowed()``, and ``IndicatorSpec.resolve`` applies the same rules
when an indicator is computed directly. The rules are KTRDR's (its pydantic ``Params``
models): whole-number parameters are strict (``14.0``, ``"14"`` and ``true`` are refused),
a number parameter takes an int, a flag takes only ``true``/``false``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")

Outputs = dict[str, np.ndarray]


class InvalidParameter(ValueError):
    """A parameter value its indicator does not accept; the message says what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        super().__init__(f"{name}: {value!r} is not allowed; {allowed}")
        self.name, self.value, self.allowed = name, value, allowed


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default, type (int, float, bool or str) and KTRDR's bounds or choices."""

    default: Any
    kind: type
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        """What a user may write, e.g. "a whole number from 2 to 100"."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices)
        noun = "a whole number" if self.kind is int else "a number"
        low = (f">= {_fmt(self.ge)}" if self.ge is not None
               else f"> {_fmt(self.gt)}" if self.gt is not None else "")
        high = (f"<= {_fmt(self.le)}" if self.le is not None
                else f"< {_fmt(self.lt)}" if self.lt is not None else "")
        if self.ge is not None and self.le is not None:
            return f"{noun} from {_fmt(self.ge)} to {_fmt(self.le)}"
        return " ".join([noun, " and ".join(b for b in (low, high) if b)]).strip()

    def accepts(self, value: Any) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is str:
            return isinstance(value, str) and value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and not isinstance(value, int):
            return False  # strict: 14.0 is not a whole-number parameter
        if not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.le is None or value <= self.le)
                and (self.gt is None or value > self.gt) and (self.lt is None or value < self.lt))

    def check(self, name: str, value: Any) -> Any:
        """The value as the formula takes it (an int becomes a float for a number parameter)."""
        if not self.accepts(value):
            raise InvalidParameter(name, value, self.allowed())
        return float(value) if self.kind is float else value


def whole(default: int, ge: int, le: int) -> ParamSpec:
    return ParamSpec(default, int, ge=ge, le=le)


def number(default: float, **bounds: float) -> ParamSpec:
    return ParamSpec(float(default), float, **bounds)


def flag(default: bool) -> ParamSpec:
    return ParamSpec(default, bool)


def source() -> ParamSpec:
    """The price column a formula reads (KTRDR accepts any text and fails later on a typo)."""
    return ParamSpec("close", str, choices=PRICE_COLUMNS)


@dataclass(frozen=True)
class IndicatorSpec:
    """What the strategy loader and the feature step need to know about one indicator type.

    ``outputs`` lists every output KTRDR declares, primary first; empty for a single output.
    ``select_outputs``, where set, narrows them by the parameters (the flags KTRDR ignores,
    such as aroon's ``include_oscillator``, and adline's optional smoothed line).
    """

    name: str
    aliases: tuple[str, ...]
    params: Mapping[str, ParamSpec]
    outputs: tuple[str, ...]
    formula: Callable[..., Outputs] = field(repr=False)
    select_outputs: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = field(
        default=None, repr=False)

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Declared parameters with defaults filled in; undeclared keys (``type``,
        ``data_source``, typos) are ignored here, the strategy loader warns about them."""
        return {name: pspec.check(name, params.get(name, pspec.default))
                for name, pspec in self.params.items()}

    def outputs_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The outputs these (resolved) parameters produce, primary first."""
        return self.select_outputs(params) if self.select_outputs else self.outputs

    def enabling_flag(self, output: str, params: Mapping[str, Any]) -> str | None:
        """The true/false parameter that, set to true, adds ``output`` (for error messages)."""
        for name, pspec in self.params.items():
            if pspec.kind is bool and output in self.outputs_for({**params, name: True}):
                return name
        return None

    def compute(self, bars: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
        """One column per output ("value" for a single output) on ``bars.index``."""
        resolved = self.resolve(params)
        arrays = self.formula(bars, **resolved)
        names = self.outputs_for(resolved) or ("value",)
        # The arrays are new and owned by nobody else, so the frame may take them uncopied.
        return pd.DataFrame({k: arrays[k] for k in names}, index=bars.index, copy=False)


def kt_spec(class_name: str, aliases: tuple[str, ...], params: Mapping[str, ParamSpec],
            outputs: tuple[str, ...], formula: Callable[..., Outputs],
            select_outputs: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None,
            ) -> IndicatorSpec:
    """An indicator named as KTRDR's registry names it, from KTRDR's class name.

    Canonical name: the class name without a trailing ``Indicator``, lowercased
    (``BollingerBandsIndicator`` -> ``bollingerbands``; ``SimpleMovingAverage`` keeps its whole
    name). Aliases: the whole class name lowercased, then the class's own short aliases.
    """
    stem = class_name[: -len("Indicator")] if class_name.endswith("Indicator") else class_name
    names = [class_name.lower(), *aliases]
    extra = tuple(dict.fromkeys(n for n in names if n != stem.lower()))
    return IndicatorSpec(stem.lower(), extra, params, outputs, formula, select_outputs)
