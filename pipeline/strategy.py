"""Read a KTRDR v3 strategy file into a checked, defaults-filled :class:`Strategy`.

Users bring their KTRDR files unchanged, so this loader accepts everything KTRDR accepts and
carries keys it does not use (``scope``, ``deployment``, ...) in ``raw``. What it cannot honour
it says out loud: an ignored key is a warning, a bad value is an error. All errors of a file are
collected and raised together in one :class:`StrategyError`, each as ``key.path: what is wrong;
what is allowed``, because a user fixing a file wants the whole list at once, not one per run.

An unknown key within two edits of one the section takes (``trainig:``, ``epoch: 50``,
``hidden_layer:``, an indicator's ``peroid``) is a typo and an error that names the key meant
(pipeline.schema.keys): training with the defaults instead would publish a model nobody asked
for. Other unknown keys are ones KTRDR ignores too, and stay warnings: nearly every KTRDR file
carries some (``decisions.confidence_threshold``). ``strict=True`` turns every warning into an
error.

The sections are read by pipeline.schema: typed pydantic models where a section is keys with
types and defaults (the top level, ``training_data``, ``model``, ``decisions``, ``training``
and its ``data_split``, fuzzy memberships, ``nn_inputs`` entries), readers over the registries
where the rules live elsewhere (indicator parameters, label parameters, the training keys of
pipeline.training_keys, context_data) and for the references between sections. This module
reads the file, runs the sections in file order and holds the checks on the labels.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import safe_yaml
from pipeline.context_data import ContextEntry, parse_context_data
from pipeline.errors import StrategyError
from pipeline.labels import SOURCES, resolve_params
from pipeline.schema.base import validate
from pipeline.schema.check import Check, show
from pipeline.schema.features import is_v3_strategy, read_features
from pipeline.schema.sections import (
    ARCHITECTURES,
    CostModel,
    DataSplit,
    Decisions,
    ModelSection,
    StrategyFile,
    TrainingSection,
)
from pipeline.schema.training_data import read_training_data
from pipeline.training_keys import read_optimisation
from pipeline.versions import sanitize_name  # the store's rule, torch-free for `models`

__all__ = ["INLINE", "Strategy", "deep_merge", "is_v3_strategy", "load_strategy", "sanitize_name"]

INLINE = "<inline>"


@dataclass
class Strategy:
    """A validated strategy: what every later pipeline step reads instead of the YAML."""

    name: str
    source: str | None
    raw: dict
    symbols: list[str]
    timeframes: list[str]
    base_timeframe: str
    history_required: int
    start_date: str | None
    end_date: str | None
    indicators: dict[str, dict]
    fuzzy_sets: dict[str, dict]
    nn_inputs: list[dict]
    model: dict
    training: dict
    warnings: list[str] = field(default_factory=list)
    # Checked context_data entries; an indicator reading one has a ``data_source`` key.
    context_data: list[ContextEntry] = field(default_factory=list)
    decisions: dict = field(default_factory=dict)  # output_format, cost_model (regression)


def deep_merge(base: Mapping, overrides: Mapping) -> dict:
    """Return a new dict: mappings merge key by key, any other override value replaces.

    Lists replace rather than append, so an override of ``symbols`` means exactly that list.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_strategy(
    source: str | os.PathLike | Mapping,
    *,
    strict: bool = False,
    overrides: Mapping | None = None,
    base_dir: Path | None = None,
) -> Strategy:
    """Load, merge ``overrides`` into, and validate a strategy; raise one StrategyError for all.

    A path is read with ``yaml.safe_load`` only (files are data). With ``base_dir`` a relative
    path resolves under it and a path that lands outside it is refused, so a job file cannot
    point the daemon at arbitrary files. A mapping is deep-copied, never modified.
    """
    if isinstance(source, Mapping):
        label, loaded = INLINE, copy.deepcopy(dict(source))
    else:
        path = _resolve(Path(source), base_dir)
        label, loaded = str(path), _read_yaml(path)
    if not isinstance(loaded, Mapping):
        kind = "empty" if loaded is None else type(loaded).__name__
        raise StrategyError(
            [
                f"(file): is {kind}, not a mapping; a strategy is a YAML mapping "
                "with name, training_data, indicators, fuzzy_sets, nn_inputs"
            ],
            label,
        )
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise StrategyError(["overrides: must be a mapping of keys to replace"], label)
        loaded = deep_merge(loaded, overrides)
    raw = _jsonable(loaded)
    check = Check(strict)
    strategy = _validate(raw, label, check)
    check.finish()
    strategy.warnings = check.warnings
    if check.errors:
        raise StrategyError(check.errors, label)
    return strategy


# --------------------------------------------------------------------------- reading


def _resolve(path: Path, base_dir: Path | None) -> Path:
    """Find the file (``name`` may omit ``.yaml``) and refuse one outside ``base_dir``."""
    if base_dir is not None:
        root = Path(base_dir).resolve()
        path = (root / path).resolve()
        if not path.is_relative_to(root):
            raise StrategyError(
                [f"strategy: {path} is outside the strategies folder {root}"], str(path)
            )
    if not path.exists() and not path.suffix:
        for suffix in (".yaml", ".yml"):
            if path.with_suffix(suffix).exists():
                return path.with_suffix(suffix)
    return path


def _read_yaml(path: Path) -> Any:
    """Read with ``safe_load`` and turn I/O and syntax failures into user-facing errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StrategyError([f"(file): cannot read it: {exc}"], str(path)) from None
    try:
        return safe_yaml.load(text)
    except yaml.YAMLError as exc:
        raise StrategyError([f"(file): not valid YAML: {exc}"], str(path)) from None


def _jsonable(value: Any) -> Any:
    """Copy ``value`` so ``json.dumps`` takes it: dates become ISO text, keys text, sets lists.

    ``raw`` is saved as config.json; an unquoted ``2017-05-01`` loads as a date JSON cannot hold.
    """
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------- sections


def _validate(raw: dict, label: str, check: Check) -> Strategy:
    """Check every section in file order; later sections see earlier ones' cleaned results."""
    top = validate(StrategyFile, raw, "", check)
    name = sanitize_name(top.name) if isinstance(top.name, str) else ""
    symbols, timeframes, base, start, end, history = read_training_data(raw, check)

    context = parse_context_data(raw.get("context_data"), check)
    indicators, fuzzy_sets, nn_inputs = read_features(raw, context, timeframes, check)
    model = _model(raw, check)
    decisions = _decisions(raw, check)
    training = _training(raw, decisions["output_format"], check)
    _num_classes(raw, training, check)
    return Strategy(
        name=name, source=label, raw=raw, symbols=symbols, timeframes=timeframes,
        base_timeframe=base, history_required=history, start_date=start, end_date=end,
        indicators=indicators, fuzzy_sets=fuzzy_sets, nn_inputs=nn_inputs, model=model,
        training=training, warnings=check.warnings, context_data=context, decisions=decisions,
    )  # fmt: skip


def _model(raw: Mapping, check: Check) -> dict:
    """``model``: the type, then that type's architecture (pipeline.schema.sections)."""
    section = validate(ModelSection, raw.get("model"), "model", check)
    kind = section.type
    arch = validate(ARCHITECTURES[kind], section.architecture, "model.architecture", check,
                    model_type=kind)
    return {"type": kind, **arch.model_dump(include=set(type(arch).model_fields))}


def _decisions(raw: Mapping, check: Check) -> dict:
    """``output_format`` and, for a regression, its cost model (pipeline.schema.sections)."""
    section = validate(Decisions, raw.get("decisions"), "decisions", check)
    out: dict[str, Any] = {"output_format": section.output_format}
    if section.output_format == "regression":
        cost = {}
        if isinstance(section.cost_model, Mapping):
            model = validate(CostModel, section.cost_model, "decisions.cost_model", check)
            cost = model.model_dump(include=set(CostModel.model_fields))
        out["cost_model"] = cost
    return out


def _training(raw: Mapping, output_format: str, check: Check) -> dict:
    """The training keys (pipeline.training_keys has their defaults and checks), the labels,
    the split and the seed."""
    typed = validate(TrainingSection, raw.get("training"), "training", check)
    section = raw["training"] if isinstance(raw.get("training"), Mapping) else {}
    return {
        **read_optimisation(section, output_format, check),
        "output_format": output_format,
        "labels": _labels(section, output_format, check),
        "data_split": _data_split(section, check),
        "seed": typed.seed,
    }


def _labels(section: Mapping, output_format: str, check: Check) -> dict:
    """``training.labels``: the source's own parameters (pipeline.labels), KTRDR's aliases
    read with a warning; every bad key reported with its path. The source must fit
    ``decisions.output_format``: KTRDR trains forward_return as a 3-class model and zigzag as
    a regression when told to (its defect 15); both are errors here."""
    labels = check.section(section, "labels", "training.labels")
    source = labels.get("source", "zigzag")
    if source not in SOURCES:
        check.error("training.labels.source",
                    f"{show(source)} is not allowed; allowed: " + ", ".join(SOURCES))
        source = "zigzag"
        labels = {}
    wants = "regression" if SOURCES[source].output_type == "regression" else "classification"
    if wants != output_format:
        fitting = ", ".join(n for n, s in SOURCES.items()
                            if (s.output_type == "regression") == (output_format == "regression"))
        fix = ("set decisions.output_format: regression (with decisions.cost_model)"
               if wants == "regression" else "remove decisions.output_format: regression")
        check.error("training.labels.source",
                    f"{source!r} gives {wants} targets but decisions.output_format is "
                    f"{output_format}; {fix}, or use a {output_format} source: {fitting}")
    resolved = resolve_params(SOURCES[source], labels, "training.labels.")
    check.errors.extend(resolved.errors)
    check.warnings.extend(resolved.warnings)
    return {"source": source, **resolved.values}


def _num_classes(raw: Mapping, training: Mapping, check: Check) -> None:
    """``decisions.num_classes`` (KTRDR ignores it) must at least not contradict the labels."""
    decisions = raw.get("decisions")
    if not isinstance(decisions, Mapping) or decisions.get("num_classes") is None:
        return
    source = SOURCES[training["labels"]["source"]]
    if decisions["num_classes"] != source.num_classes:
        check.error(
            "decisions.num_classes",
            f"{show(decisions['num_classes'])} is not allowed; {source.num_classes} "
            f"({', '.join(source.classes)}), the classes of {source.name} labels",
        )


def _data_split(section: Mapping, check: Check) -> dict:
    split = validate(DataSplit, section.get("data_split"), "training.data_split", check)
    return split.model_dump(include=set(DataSplit.model_fields))
