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
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import safe_yaml
from pipeline.context_data import ContextEntry, check_data_sources, parse_context_data
from pipeline.errors import StrategyError
from pipeline.fuzzy import MEMBERSHIP_PARAM_COUNTS
from pipeline.indicators import InvalidParameter, ParamSpec, indicator_names, indicator_spec
from pipeline.labels import SOURCES, resolve_params
from pipeline.schema.base import validate
from pipeline.schema.check import Check, is_int, is_number, show
from pipeline.schema.keys import did_you_mean, near_miss
from pipeline.schema.sections import (
    ARCHITECTURES,
    TRAINABLE,
    CostModel,
    DataSplit,
    Decisions,
    ModelSection,
)
from pipeline.training_keys import OPTIMISATION_KEYS, read_optimisation

INLINE = "<inline>"

_TOP_KEYS = (
    "name", "description", "version", "training_data", "indicators", "fuzzy_sets",
    "nn_inputs", "model", "decisions", "training", "context_data",
)  # fmt: skip
_NORMALIZATIONS = ("minmax", "zscore", "none")
_TIMEFRAME_RE = re.compile(r"^[1-9][0-9]{0,5}(m|h|d|w)$")
# Symbols become file names ({SYMBOL}_{TF}.csv): no path separators, no leading dot.
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9_^=][A-Za-z0-9_.^=-]{0,31}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_MAX = 100


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


def is_v3_strategy(mapping: Mapping) -> bool:
    """KTRDR's own test: v3 files declare indicators by id and list the model's inputs."""
    return isinstance(mapping.get("indicators"), Mapping) and "nn_inputs" in mapping


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


def sanitize_name(name: str) -> str:
    """Make ``name`` safe as one folder name: letters, digits, ``_ - .``; never ``.``-led."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip())[:_NAME_MAX]
    return re.sub(r"^\.", "_", clean)


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
    check = _Check(strict)
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


# --------------------------------------------------------------------------- checking helpers


_Check = Check  # the name the section checks below use
_is_int, _is_number, _show = is_int, is_number, show


def _text_list(value: Any) -> list | None:
    """A non-empty list of non-empty strings, or None."""
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


# --------------------------------------------------------------------------- sections


def _validate(raw: dict, label: str, check: _Check) -> Strategy:
    """Check every section in file order; later sections see earlier ones' cleaned results."""
    check.unused(raw, _TOP_KEYS, "")
    name = _name(raw, check)
    data = check.section(raw, "training_data", "training_data")
    symbols: list[str] = []
    timeframes, base = [], ""
    if "training_data" not in raw:  # one error, not one per missing sub-key
        check.error("training_data", "missing; required: symbols and timeframes")
    else:
        symbols = _symbols(data, check)
        timeframes, base = _timeframes(data, check)
    start, end = _dates(data, check)
    history = check.integer(data, "history_required", "training_data.history_required", 200, 50)
    check.unused(
        data,
        ("symbols", "timeframes", "history_required", "start_date", "end_date", "date_range"),
        "training_data.",
    )

    context = parse_context_data(raw.get("context_data"), check)
    indicators: dict[str, dict] = {}
    fuzzy_sets: dict[str, dict] = {}
    nn_inputs: list[dict] = []
    if is_v3_strategy(raw):
        indicators, outputs = _indicators(_without_data_source(raw), check)
        for ind_id, source_id in check_data_sources(raw["indicators"], context, check).items():
            if ind_id in indicators:
                indicators[ind_id]["data_source"] = source_id
        fuzzy_sets = _fuzzy_sets(raw, indicators, outputs, check)
        nn_inputs = _nn_inputs(raw, fuzzy_sets, indicators, outputs, timeframes, check)
        _unused_definitions(indicators, fuzzy_sets, nn_inputs, check)
    else:
        check.error("(file)", _not_v3_reason(raw))
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


def _without_data_source(raw: dict) -> dict:
    """``raw`` with ``data_source`` taken out of each indicator: it names the indicator's input
    series (checked against context_data), not a parameter of its formula."""
    bodies = {
        ind_id: ({k: v for k, v in body.items() if k != "data_source"}
                 if isinstance(body, Mapping) else body)
        for ind_id, body in raw["indicators"].items()
    }
    return {**raw, "indicators": bodies}


def _not_v3_reason(raw: Mapping) -> str:
    what = []
    if not isinstance(raw.get("indicators"), Mapping):
        got = "missing" if "indicators" not in raw else f"a {type(raw['indicators']).__name__}"
        what.append(f"`indicators` is {got}")
    if "nn_inputs" not in raw:
        what.append("`nn_inputs` is missing")
    return (
        "not a KTRDR v3 strategy (" + " and ".join(what) + "); this loader reads v3 files only: "
        "`indicators` is a mapping of id -> {type, params} and `nn_inputs` lists the model "
        "inputs (older KTRDR files list indicators; upgrade them to v3 first)"
    )


def _name(raw: Mapping, check: _Check) -> str:
    value = raw.get("name")
    if not isinstance(value, str) or not value.strip():
        check.error("name", f"{_show(value)} is not allowed; required: the strategy name (text)")
        return ""
    return sanitize_name(value)


def _symbols(data: Mapping, check: _Check) -> list[str]:
    """Both KTRDR modes; ``symbols:`` is an alias of ``list``; a plain list is taken as is."""
    path = "training_data.symbols"
    spec = data.get("symbols")
    if spec is None:
        check.error(
            path,
            "missing; required: {mode: single, symbol: X} or {mode: multi_symbol, list: [X, Y]}",
        )
        return []
    if isinstance(spec, list):
        spec = {"mode": "multi_symbol", "list": spec}
    if not isinstance(spec, Mapping):
        check.error(
            path,
            f"{_show(spec)} is not allowed; {{mode: single, symbol: X}} or "
            "{mode: multi_symbol, list: [X, Y]}",
        )
        return []
    listed = spec.get("list", spec.get("symbols"))
    mode = spec.get("mode", "single" if "symbol" in spec else "multi_symbol")
    if mode == "single" and "symbol" in spec:
        symbols = [spec["symbol"]] if isinstance(spec["symbol"], str) else None
        where = f"{path}.symbol"
    elif mode in ("single", "multi_symbol"):
        symbols, where = _text_list(listed), f"{path}.list"
        if mode == "single" and symbols and len(symbols) != 1:
            check.error(
                f"{path}.mode",
                f"single with {len(symbols)} symbols; use mode: multi_symbol for several",
            )
    else:
        check.error(f"{path}.mode", f"{_show(mode)} is not allowed; allowed: single, multi_symbol")
        return []
    if symbols is None:
        check.error(
            where,
            "missing or not text; required: a symbol name such as EURUSD"
            if where.endswith("symbol")
            else "required: a non-empty list of symbol names",
        )
        return []
    check.unused(spec, ("mode", "symbol", "list", "symbols"), f"{path}.")
    return _unique_names(
        symbols, where, _SYMBOL_RE, "letters, digits, _ . - ^ = (it names the data file)", check
    )


def _unique_names(
    names: list[str], path: str, pattern: re.Pattern, rule: str, check: _Check
) -> list[str]:
    for value in names:
        if not pattern.match(value):
            check.error(path, f"{value!r} is not allowed; {rule}")
    for value in {v for v in names if names.count(v) > 1}:
        check.error(path, f"{value!r} is listed twice; list each once")
    return names


def _timeframes(data: Mapping, check: _Check) -> tuple[list[str], str]:
    """Single or multi mode; the base timeframe defaults to the first of the list."""
    path = "training_data.timeframes"
    spec = data.get("timeframes")
    if isinstance(spec, list):
        spec = {"mode": "multi_timeframe", "list": spec}
    if not isinstance(spec, Mapping):
        check.error(
            path,
            f"{'missing' if spec is None else _show(spec)}; required: "
            "{mode: single, timeframe: 1h} or "
            "{mode: multi_timeframe, list: [1h, 4h], base_timeframe: 1h}",
        )
        return [], ""
    mode = spec.get("mode", "single" if "timeframe" in spec else "multi_timeframe")
    if mode not in ("single", "multi_timeframe"):
        check.error(
            f"{path}.mode", f"{_show(mode)} is not allowed; allowed: single, multi_timeframe"
        )
        return [], ""
    if mode == "single" and "timeframe" in spec:
        listed = [spec["timeframe"]] if isinstance(spec["timeframe"], str) else None
        where = f"{path}.timeframe"
    else:
        listed, where = _text_list(spec.get("list")), f"{path}.list"
        if mode == "single" and listed and len(listed) != 1:
            check.error(
                f"{path}.mode",
                f"single with {len(listed)} timeframes; use mode: multi_timeframe for several",
            )
    if listed is None:
        check.error(
            where,
            "missing or not text; required: "
            + (
                "a timeframe such as 1h"
                if where.endswith("timeframe")
                else "a non-empty list of timeframes such as [1h, 4h]"
            ),
        )
        return [], ""
    check.unused(spec, ("mode", "timeframe", "list", "base_timeframe"), f"{path}.")
    timeframes = _unique_names(
        listed, where, _TIMEFRAME_RE, "a number and a unit m, h, d or w (1h, 4h, 1d)", check
    )
    if mode == "single":  # one timeframe is its own base; a stray base_timeframe is moot
        return timeframes, timeframes[0]
    base = spec.get("base_timeframe", timeframes[0])
    if base not in timeframes:
        check.error(
            f"{path}.base_timeframe",
            f"{_show(base)} is not in the list; allowed: {', '.join(timeframes)}",
        )
        base = timeframes[0]
    return timeframes, base


def _dates(data: Mapping, check: _Check) -> tuple[str | None, str | None]:
    """``start_date``/``end_date``, or KTRDR's other spelling ``date_range: {start, end}``."""
    span = data.get("date_range")
    if span is not None and not isinstance(span, Mapping):
        check.error("training_data.date_range", "must be a mapping {start: ..., end: ...}")
        span = None
    span = span or {}
    parsed = []
    for key, alt in (("start_date", "start"), ("end_date", "end")):
        path, value = f"training_data.{key}", data.get(key)
        if value is None and alt in span:
            path, value = f"training_data.date_range.{alt}", span[alt]
        parsed.append(_date(value, path, check))
    start, end = parsed
    if start and end and start[1] >= end[1]:
        check.error(
            "training_data.end_date",
            f"{end[0]} is not after start_date {start[0]}; the range must not be empty",
        )
    return tuple(p[0] if p else None for p in parsed)  # type: ignore[return-value]


def _date(value: Any, path: str, check: _Check) -> tuple[str, dt.datetime] | None:
    """Parse an ISO date or date-time; naive times are UTC like the price data."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        check.error(path, f"{_show(value)} is not a date; write YYYY-MM-DD or an ISO date-time")
        return None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return str(value), when


def _indicators(raw: Mapping, check: _Check) -> tuple[dict[str, dict], dict[str, Any]]:
    """Return id -> {type, params with defaults}, and id -> output names for reference checks."""
    section = raw["indicators"]
    if not section:
        check.error("indicators", "empty; define at least one, e.g. rsi_14: {type: rsi}")
    result: dict[str, dict] = {}
    outputs: dict[str, tuple] = {}
    for ind_id, body in section.items():
        path = f"indicators.{ind_id}"
        if not _ID_RE.match(ind_id):
            check.error(
                path,
                "an indicator id may hold letters, digits, _ and - only "
                "('.' separates an output, as in macd.histogram)",
            )
        outputs[ind_id] = None  # declared: a reference to it is not a second error
        if not isinstance(body, Mapping):
            check.error(path, f"must be a mapping {{type: ..., params}}, got {_show(body)}")
            continue
        type_name = body.get("type")
        spec = indicator_spec(type_name) if isinstance(type_name, str) else None
        if spec is None:
            check.error(f"{path}.type", _not_an_indicator(type_name))
            continue
        params = _params(body, spec, path, check)
        result[ind_id] = {"type": spec.name, **params}
        outputs[ind_id] = spec.outputs_for(params)
    return result, outputs


def _not_an_indicator(type_name: Any) -> str:
    allowed = f"allowed: {', '.join(indicator_names())}"
    if type_name is None:
        return f"missing; {allowed}"
    meant = near_miss(type_name, indicator_names()) if isinstance(type_name, str) else None
    hint = f"did you mean {meant!r}? " if meant else ""
    return f"{_show(type_name)} is not an indicator; {hint}{allowed}"


def _params(body: Mapping, spec: Any, path: str, check: _Check) -> dict:
    """Check each known parameter's type, fill defaults, and report unknown ones."""
    params: dict[str, Any] = {}
    for pname, pspec in spec.params.items():
        value = body.get(pname, pspec.default)
        params[pname] = _param(value, pspec, pname, f"{path}.{pname}", check)
    unknown = []
    for key in body:
        if key != "type" and key not in spec.params:
            typo = did_you_mean(str(key), spec.params)
            if typo:
                check.error(f"{path}.{key}", f"{typo} ({spec.name} takes {', '.join(spec.params)})")
            else:
                unknown.append(key)
    if unknown:
        noun = "parameters" if len(unknown) > 1 else "parameter"
        verb = "are" if len(unknown) > 1 else "is"
        takes = ", ".join(spec.params) or "no parameters"
        check.warn(path, f"{noun} {', '.join(unknown)} {verb} not used by {spec.name} "
                   f"(it takes {takes}); KTRDR ignores them too")
    return params


def _param(value: Any, pspec: ParamSpec, name: str, path: str, check: _Check) -> Any:
    """The registry's rule for this parameter (KTRDR's types and bounds); default if broken."""
    try:
        return pspec.check(name, value)
    except InvalidParameter as exc:
        check.error(path, f"{_show(value)} is not allowed; {exc.allowed}")
        return pspec.default


def _reference(
    ref: Any, path: str, indicators: Mapping, outputs: Mapping, check: _Check
) -> str | None:
    """Check ``id`` or ``id.output`` against the declared indicators and their outputs."""
    if not isinstance(ref, str) or not ref:
        check.error(
            path,
            f"{_show(ref)}; required: an indicator id such as "
            f"{next(iter(indicators), 'rsi_14')} or id.output",
        )
        return None
    ind_id, _, output = ref.partition(".")
    if ind_id in outputs and ind_id not in indicators:
        return None  # declared but broken: its own error is out
    if ind_id not in indicators:
        known = ", ".join(indicators) or "(none defined)"
        check.error(path, f"{ref!r} is not an indicator; indicators are: {known}")
        return None
    names = outputs[ind_id]
    if output and not names:
        check.error(
            path,
            f"{ref!r}: {ind_id} ({indicators[ind_id]['type']}) has a single output; "
            f"write {ind_id!r}",
        )
        return None
    if output and output not in names:
        spec = indicator_spec(indicators[ind_id]["type"])
        flag = spec.enabling_flag(output, indicators[ind_id]) if spec else None
        hint = f" ({output!r} comes with {flag}: true)" if flag else ""
        check.error(
            path,
            f"{ref!r}: {ind_id} has no output {output!r}; outputs are: " + ", ".join(names) + hint,
        )
        return None
    return ref


def _fuzzy_sets(
    raw: Mapping, indicators: Mapping, outputs: Mapping, check: _Check
) -> dict[str, dict]:
    section = check.section(raw, "fuzzy_sets", "fuzzy_sets")
    result: dict[str, dict] = {}
    for set_id, body in section.items():
        path = f"fuzzy_sets.{set_id}"
        if not _ID_RE.match(set_id):
            check.error(path, "a fuzzy set id may hold letters, digits, _ and - only")
        if not isinstance(body, Mapping):
            check.error(
                path,
                f"must be a mapping {{indicator: id, name: [a, b, c], ...}}, got {_show(body)}",
            )
            continue
        ref = _reference(body.get("indicator"), f"{path}.indicator", indicators, outputs, check)
        members = [
            _membership(name, spec, f"{path}.{name}", check)
            for name, spec in body.items()
            if name != "indicator"
        ]
        if not members:
            check.error(path, "no memberships; add at least one, e.g. low: [0, 20, 40]")
        if ref is not None and all(members):
            result[set_id] = {"indicator": ref, "memberships": members}
    return result


def _membership(name: str, spec: Any, path: str, check: _Check) -> dict | None:
    """``name: [a, b, c]`` (triangular) or ``name: {type, parameters}``; count, order checked."""
    kinds = ", ".join(MEMBERSHIP_PARAM_COUNTS)
    if name == "input_transform":
        check.error(path, "not supported; fuzzy sets read the indicator value as it is")
        return None
    if isinstance(spec, list):
        kind, params = "triangular", spec
    elif isinstance(spec, Mapping):
        kind, params = spec.get("type"), spec.get("parameters")
        kind = kind.lower() if isinstance(kind, str) else kind
        check.unused(spec, ("type", "parameters"), f"{path}.")
    else:
        check.error(
            path,
            f"{_show(spec)} is not a membership; write [a, b, c] or "
            f"{{type: {kinds.split(', ')[0]}, parameters: [...]}}",
        )
        return None
    if kind not in MEMBERSHIP_PARAM_COUNTS:
        check.error(f"{path}.type", f"{_show(kind)} is not allowed; allowed: {kinds}")
        return None
    count = MEMBERSHIP_PARAM_COUNTS[kind]
    if not isinstance(params, list) or len(params) != count:
        got = f"{len(params)} values" if isinstance(params, list) else _show(params)
        check.error(path, f"{kind} takes {count} parameters, got {got}")
        return None
    if not all(_is_number(p) for p in params):
        check.error(path, f"parameters {params} must all be numbers")
        return None
    if kind == "gaussian":
        if params[1] <= 0:
            check.error(path, f"gaussian sigma {params[1]} is not allowed; sigma must be > 0")
            return None
    elif any(a > b for a, b in zip(params, params[1:], strict=False)):
        order = " <= ".join("abcd"[:count])
        check.error(path, f"parameters {params} are out of order; {kind} needs {order}")
        return None
    return {"name": name, "type": kind, "parameters": [float(p) for p in params]}


def _nn_inputs(
    raw: Mapping,
    fuzzy_sets: Mapping,
    indicators: Mapping,
    outputs: Mapping,
    timeframes: list[str],
    check: _Check,
) -> list[dict]:
    section = raw["nn_inputs"]
    if not isinstance(section, list) or not section:
        check.error(
            "nn_inputs",
            "required: a non-empty list of {fuzzy_set: id, timeframes: all} "
            "or {raw_indicator: id, timeframes: all}",
        )
        return []
    result, seen = [], set()
    for i, item in enumerate(section):
        path = f"nn_inputs[{i}]"
        if not isinstance(item, Mapping) or ("fuzzy_set" in item) == ("raw_indicator" in item):
            check.error(path, "each input names exactly one of fuzzy_set or raw_indicator")
            continue
        tfs = _input_timeframes(item.get("timeframes", "all"), timeframes, path, check)
        if "fuzzy_set" in item:
            entry = _fuzzy_input(item, fuzzy_sets, raw.get("fuzzy_sets"), path, check)
        else:
            entry = _raw_input(item, indicators, outputs, path, check)
        if entry is None or tfs is None:
            continue
        kind, ref = next(iter(entry.items()))
        for tf in tfs:
            if (kind, ref, tf) in seen:
                check.error(path, f"{kind} {ref!r} on {tf} is already an input; list it once")
            seen.add((kind, ref, tf))
        entry["timeframes"] = tfs
        result.append(entry)
    return result


def _fuzzy_input(
    item: Mapping, fuzzy_sets: Mapping, declared: Any, path: str, check: _Check
) -> dict | None:
    set_id = item["fuzzy_set"]
    check.unused(item, ("fuzzy_set", "timeframes"), f"{path}.")
    if isinstance(set_id, str) and isinstance(declared, Mapping) and set_id in declared:
        return {"fuzzy_set": set_id} if set_id in fuzzy_sets else None  # its own error is out
    known = (
        ", ".join(map(str, declared)) if isinstance(declared, Mapping) and declared else "(none)"
    )
    check.error(f"{path}.fuzzy_set", f"{_show(set_id)} is not a fuzzy set; fuzzy sets are: {known}")
    return None


def _raw_input(
    item: Mapping, indicators: Mapping, outputs: Mapping, path: str, check: _Check
) -> dict | None:
    check.unused(item, ("raw_indicator", "timeframes", "normalization"), f"{path}.")
    norm = check.choice(item, "normalization", f"{path}.normalization", "none", _NORMALIZATIONS)
    ref = _reference(item["raw_indicator"], f"{path}.raw_indicator", indicators, outputs, check)
    if ref is None:
        return None
    return {"raw_indicator": ref, "normalization": norm}


def _input_timeframes(
    value: Any, timeframes: list[str], path: str, check: _Check
) -> list[str] | None:
    """``all`` means the training list, in its order; a list must come from it."""
    if value == "all":
        return list(timeframes)
    listed = [value] if isinstance(value, str) else _text_list(value)
    allowed = "all or a list from " + ", ".join(timeframes)
    if listed is None:
        check.error(f"{path}.timeframes", f"{_show(value)} is not allowed; {allowed}")
        return None
    bad = [tf for tf in listed if tf not in timeframes]
    for tf in bad:
        check.error(f"{path}.timeframes", f"{tf!r} is not a training timeframe; {allowed}")
    return None if bad else listed


def _unused_definitions(
    indicators: Mapping, fuzzy_sets: Mapping, nn_inputs: list, check: _Check
) -> None:
    """Warn about definitions nothing feeds to the model: usually a typo in a reference."""
    used_sets = {e["fuzzy_set"] for e in nn_inputs if "fuzzy_set" in e}
    used_ids = {e["raw_indicator"].partition(".")[0] for e in nn_inputs if "raw_indicator" in e}
    used_ids |= {fuzzy_sets[s]["indicator"].partition(".")[0] for s in used_sets}
    for set_id in fuzzy_sets:
        if set_id not in used_sets:
            check.warn(f"fuzzy_sets.{set_id}", "not used by any nn_input; it is not a feature")
    for ind_id in indicators:
        if ind_id not in used_ids:
            check.warn(f"indicators.{ind_id}", "not used by any nn_input; it is not a feature")


def _model(raw: Mapping, check: _Check) -> dict:
    """``model``: the type, then that type's architecture (pipeline.schema.sections)."""
    section = validate(ModelSection, raw.get("model"), "model", check)
    kind = section.type
    if kind not in TRAINABLE:
        check.error("model.type", f"{raw['model']['type']!r} is not supported yet; "
                    f"allowed: {', '.join(TRAINABLE)}")
        kind = "mlp"
    arch = validate(ARCHITECTURES[kind], section.architecture, "model.architecture", check,
                    model_type=kind)
    return {"type": kind, **arch.model_dump(include=set(type(arch).model_fields))}


def _decisions(raw: Mapping, check: _Check) -> dict:
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


def _training(raw: Mapping, output_format: str, check: _Check) -> dict:
    """The training keys (pipeline.training_keys has their defaults and checks), the labels,
    the split and the seed."""
    section = check.section(raw, "training", "training")
    check.unused(section, (*OPTIMISATION_KEYS, "labels", "data_split", "seed"), "training.")
    seed = section.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**32):
        check.error(
            "training.seed",
            f"{_show(seed)} is not allowed; a whole number from 0 to {2**32 - 1}, or nothing",
        )
        seed = None
    return {
        **read_optimisation(section, output_format, check),
        "output_format": output_format,
        "labels": _labels(section, output_format, check),
        "data_split": _data_split(section, check),
        "seed": seed,
    }


def _labels(section: Mapping, output_format: str, check: _Check) -> dict:
    """``training.labels``: the source's own parameters (pipeline.labels), KTRDR's aliases
    read with a warning; every bad key reported with its path. The source must fit
    ``decisions.output_format``: KTRDR trains forward_return as a 3-class model and zigzag as
    a regression when told to (its defect 15); both are errors here."""
    labels = check.section(section, "labels", "training.labels")
    source = labels.get("source", "zigzag")
    if source not in SOURCES:
        check.error("training.labels.source",
                    f"{_show(source)} is not allowed; allowed: " + ", ".join(SOURCES))
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


def _num_classes(raw: Mapping, training: Mapping, check: _Check) -> None:
    """``decisions.num_classes`` (KTRDR ignores it) must at least not contradict the labels."""
    decisions = raw.get("decisions")
    if not isinstance(decisions, Mapping) or decisions.get("num_classes") is None:
        return
    source = SOURCES[training["labels"]["source"]]
    if decisions["num_classes"] != source.num_classes:
        check.error(
            "decisions.num_classes",
            f"{_show(decisions['num_classes'])} is not allowed; {source.num_classes} "
            f"({', '.join(source.classes)}), the classes of {source.name} labels",
        )


def _data_split(section: Mapping, check: _Check) -> dict:
    split = validate(DataSplit, section.get("data_split"), "training.data_split", check)
    return split.model_dump(include=set(DataSplit.model_fields))
