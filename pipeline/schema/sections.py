"""The self-contained sections as typed models: ``model`` (one architecture class per model
type), ``decisions`` with its regression ``cost_model``, and ``training.data_split``.

Defaults live on the fields; the checks that tie two keys together (a cost model required for
a regression, the split adding up to 1) are validators of the section that holds both keys.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator

from pipeline.fuzzy import MEMBERSHIP_PARAM_COUNTS
from pipeline.schema.base import Section, choice, fail, lenient, number, whole
from pipeline.schema.check import is_int, is_number, show
from pipeline.training_keys import OPTIMISATION_KEYS, OUTPUT_FORMATS

ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")
NORMALIZATIONS = ("minmax", "zscore", "none")
MODEL_TYPES = ("mlp", "lstm", "gru")
Dropout = number("with 0 <= dropout < 1", lambda x: 0 <= x < 1)
Fraction = number("with 0 < x < 1", lambda x: 0 < x < 1)
Positive = number("> 0", lambda x: x > 0)


class StrategyFile(Section):
    """The file's top level: its name and its sections (each read by its own model or reader;
    ``Any`` here so that a broken section is reported once, by its reader, with its path)."""

    name: Any = Field(default=None, validate_default=True)
    description: Any = None
    version: Any = None
    training_data: Any = None
    indicators: Any = None
    fuzzy_sets: Any = None
    nn_inputs: Any = None
    model: Any = None
    decisions: Any = None
    training: Any = None
    context_data: Any = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{show(value)} is not allowed; required: the strategy name (text)")
        return value


class ModelSection(Section):
    """``model``: its ``type`` picks the architecture class (:data:`ARCHITECTURES`)."""

    type: choice(MODEL_TYPES) = "mlp"  # type: ignore[valid-type]
    architecture: Any = None


class MlpArchitecture(Section):
    hidden_layers: list[int] = Field(default_factory=lambda: [64, 32])
    dropout: Dropout = 0.2  # type: ignore[valid-type]
    activation: choice(ACTIVATIONS) = "relu"  # type: ignore[valid-type]

    @field_validator("hidden_layers", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> list[int]:
        if not (isinstance(value, list) and value and all(is_int(n) and n > 0 for n in value)):
            raise fail(f"{show(value)} is not allowed; a list of whole numbers > 0, e.g. [64, 32]")
        return value


class SequenceArchitecture(Section):
    """KTRDR's LSTM/GRU keys and defaults; ``sequence_length`` has none (KTRDR raises). A float
    length is refused too: KTRDR would silently train without windows and then fail."""

    sequence_length: Any = Field(default=None, validate_default=True)
    hidden_size: whole(1) = 64  # type: ignore[valid-type]
    num_layers: whole(1) = 2  # type: ignore[valid-type]
    dropout: Dropout = 0.2  # type: ignore[valid-type]

    @field_validator("sequence_length", mode="before")
    @classmethod
    def _length(cls, value: Any, info: ValidationInfo) -> int:
        if value is None:
            if lenient(info):
                return 1
            kind = (info.context or {}).get("model_type", "lstm")
            raise fail(f"required for model.type {kind}: the number of bars each window "
                       "holds, e.g. 20")
        if not is_int(value) or value < 1:
            raise fail(f"{show(value)} is not allowed; a whole number >= 1, e.g. 20")
        return int(value)


ARCHITECTURES: dict[str, type[Section]] = {
    "mlp": MlpArchitecture, "lstm": SequenceArchitecture, "gru": SequenceArchitecture,
}


class CostModel(Section):
    """KTRDR's regression rule: both numbers present and > 0 (no defaults at load time)."""

    MISSING = {key: "missing; required for a regression model: a number > 0"
               for key in ("round_trip_cost", "min_edge_multiplier")}
    round_trip_cost: Positive  # type: ignore[valid-type]
    min_edge_multiplier: Positive  # type: ignore[valid-type]


class Decisions(Section):
    """``output_format`` and, for a regression, the cost model KTRDR requires (its signal
    threshold: round_trip_cost x min_edge_multiplier). ``num_classes`` is checked against the
    labels (KTRDR ignores it)."""

    output_format: choice(OUTPUT_FORMATS) = "classification"  # type: ignore[valid-type]
    num_classes: Any = None
    cost_model: Any = Field(default=None, validate_default=True)

    @field_validator("cost_model", mode="before")
    @classmethod
    def _cost_model(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("output_format") != "regression" or lenient(info):
            return value
        if not isinstance(value, dict):
            raise fail(f"{show(value)} is not allowed; required for a regression model: "
                       "{round_trip_cost: 0.003, min_edge_multiplier: 1.5} "
                       "(its signal threshold is their product)")
        return value

    def known(self) -> tuple[str, ...]:
        regression = self.output_format == "regression"
        return ("output_format", "num_classes") + (("cost_model",) if regression else ())


class DataSplit(Section):
    """``training.data_split``: three fractions that add up to 1."""

    train: Fraction = 0.7  # type: ignore[valid-type]
    validation: Fraction = 0.15  # type: ignore[valid-type]
    test: Fraction = 0.15  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _adds_up(self, info: ValidationInfo) -> DataSplit:
        parts = (self.train, self.validation, self.test)
        if abs(sum(parts) - 1.0) > 1e-6 and not lenient(info):
            shown = " + ".join(f"{v:g}" for v in parts)
            raise fail(f"train + validation + test = {shown} = {sum(parts):g}; "
                       "they must add up to 1")
        return self


class Membership(Section):
    """A fuzzy set's membership function, ``{type, parameters}``; ``[a, b, c]`` is read as a
    triangular one. The parameter count, types and order are one rule over both keys."""

    type: choice(tuple(MEMBERSHIP_PARAM_COUNTS)) = Field(  # type: ignore[valid-type]
        default=None, validate_default=True)
    parameters: Any = None

    @model_validator(mode="after")
    def _parameters(self, info: ValidationInfo) -> Membership:
        if lenient(info):
            return self
        kind, params = self.type, self.parameters
        count = MEMBERSHIP_PARAM_COUNTS[kind]
        if not isinstance(params, list) or len(params) != count:
            got = f"{len(params)} values" if isinstance(params, list) else show(params)
            raise fail(f"{kind} takes {count} parameters, got {got}")
        if not all(is_number(p) for p in params):
            raise fail(f"parameters {params} must all be numbers")
        if kind == "gaussian":
            if params[1] <= 0:
                raise fail(f"gaussian sigma {params[1]} is not allowed; sigma must be > 0")
        elif any(a > b for a, b in zip(params, params[1:], strict=False)):
            order = " <= ".join("abcd"[:count])
            raise fail(f"parameters {params} are out of order; {kind} needs {order}")
        self.parameters = [float(p) for p in params]
        return self


class NnInput(Section):
    """One model input: a fuzzy set, or an indicator's raw value with its normalization. The
    references (to fuzzy sets, indicators, training timeframes) are checked by the features
    reader, which holds the other sections."""

    fuzzy_set: Any = None
    raw_indicator: Any = None
    timeframes: Any = "all"
    normalization: Any = Field(default="none", validate_default=True)

    @field_validator("normalization", mode="before")
    @classmethod
    def _normalization(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("raw_indicator") is None:
            return value  # read for raw inputs only; elsewhere it is an ignored key
        text = value.lower() if isinstance(value, str) else value
        if text not in NORMALIZATIONS:
            raise fail(f"{show(value)} is not allowed; allowed: {', '.join(NORMALIZATIONS)}")
        return text

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> NnInput:
        if (self.fuzzy_set is None) == (self.raw_indicator is None) and not lenient(info):
            raise fail("each input names exactly one of fuzzy_set or raw_indicator")
        return self

    def known(self) -> tuple[str, ...]:
        if self.raw_indicator is not None:
            return ("raw_indicator", "timeframes", "normalization")
        return ("fuzzy_set", "timeframes")


class _Training(Section):
    labels: Any = None  # read against the label source's parameters (pipeline.labels)
    data_split: Any = None  # DataSplit
    seed: Any = None

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value: Any) -> int:
        if not (is_int(value) and 0 <= value < 2**32):
            raise fail(f"{show(value)} is not allowed; a whole number from 0 to {2**32 - 1}, "
                       "or nothing")
        return int(value)


# ``training``: the optimisation keys are declared here by name only; their defaults and checks
# are pipeline.training_keys' (the one place, shared with the trainer).
TrainingSection = create_model(
    "TrainingSection", __base__=_Training, **{key: (Any, None) for key in OPTIMISATION_KEYS})
