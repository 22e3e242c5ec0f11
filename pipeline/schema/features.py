"""``indicators``, ``fuzzy_sets`` and ``nn_inputs``: the features, checked against each other.

Indicator parameters are checked by the indicator registry (pipeline.indicators, the one place
their specs live); fuzzy sets must name a declared indicator (and one of its outputs), inputs a
declared fuzzy set or indicator and training timeframes. A reference to an indicator whose own
definition is broken is not a second error: the user has one mistake to fix, not two.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.context_data import ContextEntry, check_data_sources
from pipeline.fuzzy import MEMBERSHIP_PARAM_COUNTS
from pipeline.indicators import InvalidParameter, ParamSpec, indicator_names, indicator_spec
from pipeline.schema.base import validate
from pipeline.schema.check import Check, show, text_list
from pipeline.schema.keys import did_you_mean, near_miss
from pipeline.schema.sections import Membership, NnInput

ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def is_v3_strategy(mapping: Mapping) -> bool:
    """KTRDR's own test: v3 files declare indicators by id and list the model's inputs."""
    return isinstance(mapping.get("indicators"), Mapping) and "nn_inputs" in mapping


def read_features(
    raw: Mapping, context: list[ContextEntry], timeframes: list[str], check: Check
) -> tuple[dict[str, dict], dict[str, dict], list[dict]]:
    """(indicators, fuzzy sets, nn_inputs), each entry with its defaults filled in."""
    if not is_v3_strategy(raw):
        check.error("(file)", _not_v3_reason(raw))
        return {}, {}, []
    indicators, outputs = _indicators(_without_data_source(raw), check)
    for ind_id, source_id in check_data_sources(raw["indicators"], context, check).items():
        if ind_id in indicators:
            indicators[ind_id]["data_source"] = source_id
    fuzzy_sets = _fuzzy_sets(raw, indicators, outputs, check)
    nn_inputs = _nn_inputs(raw, fuzzy_sets, indicators, outputs, timeframes, check)
    _unused_definitions(indicators, fuzzy_sets, nn_inputs, check)
    return indicators, fuzzy_sets, nn_inputs


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


def _indicators(raw: Mapping, check: Check) -> tuple[dict[str, dict], dict[str, Any]]:
    """Return id -> {type, params with defaults}, and id -> output names for reference checks."""
    section = raw["indicators"]
    if not section:
        check.error("indicators", "empty; define at least one, e.g. rsi_14: {type: rsi}")
    result: dict[str, dict] = {}
    outputs: dict[str, tuple] = {}
    for ind_id, body in section.items():
        path = f"indicators.{ind_id}"
        if not ID_RE.match(ind_id):
            check.error(
                path,
                "an indicator id may hold letters, digits, _ and - only "
                "('.' separates an output, as in macd.histogram)",
            )
        outputs[ind_id] = None  # declared: a reference to it is not a second error
        if not isinstance(body, Mapping):
            check.error(path, f"must be a mapping {{type: ..., params}}, got {show(body)}")
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
    return f"{show(type_name)} is not an indicator; {hint}{allowed}"


def _params(body: Mapping, spec: Any, path: str, check: Check) -> dict:
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


def _param(value: Any, pspec: ParamSpec, name: str, path: str, check: Check) -> Any:
    """The registry's rule for this parameter (KTRDR's types and bounds); default if broken."""
    try:
        return pspec.check(name, value)
    except InvalidParameter as exc:
        check.error(path, f"{show(value)} is not allowed; {exc.allowed}")
        return pspec.default


def _reference(
    ref: Any, path: str, indicators: Mapping, outputs: Mapping, check: Check
) -> str | None:
    """Check ``id`` or ``id.output`` against the declared indicators and their outputs."""
    if not isinstance(ref, str) or not ref:
        check.error(
            path,
            f"{show(ref)}; required: an indicator id such as "
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
    raw: Mapping, indicators: Mapping, outputs: Mapping, check: Check
) -> dict[str, dict]:
    section = check.section(raw, "fuzzy_sets", "fuzzy_sets")
    result: dict[str, dict] = {}
    for set_id, body in section.items():
        path = f"fuzzy_sets.{set_id}"
        if not ID_RE.match(set_id):
            check.error(path, "a fuzzy set id may hold letters, digits, _ and - only")
        if not isinstance(body, Mapping):
            check.error(
                path,
                f"must be a mapping {{indicator: id, name: [a, b, c], ...}}, got {show(body)}",
            )
            continue
        body = _indicator_typo(body, path, check)
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


def _indicator_typo(body: Mapping, path: str, check: Check) -> Mapping:
    """A set's keys are membership names except ``indicator``; a near miss of it with text as
    its value (``indicater: rsi_14``) is that key misspelt: one error, then read as meant."""
    if "indicator" in body:
        return body
    for key, value in body.items():
        if isinstance(value, str) and near_miss(str(key), ("indicator",)):
            check.error(f"{path}.{key}", "unknown key; did you mean 'indicator'?")
            return {("indicator" if k == key else k): v for k, v in body.items()}
    return body


def _membership(name: str, spec: Any, path: str, check: Check) -> dict | None:
    """``name: [a, b, c]`` (triangular) or ``name: {type, parameters}``; count, order checked."""
    kinds = ", ".join(MEMBERSHIP_PARAM_COUNTS)
    if name == "input_transform":
        check.error(path, "not supported; fuzzy sets read the indicator value as it is")
        return None
    if isinstance(spec, list):
        spec = {"type": "triangular", "parameters": spec}
    elif not isinstance(spec, Mapping):
        check.error(
            path,
            f"{show(spec)} is not a membership; write [a, b, c] or "
            f"{{type: {kinds.split(', ')[0]}, parameters: [...]}}",
        )
        return None
    errors = len(check.errors)
    member = validate(Membership, spec, path, check)
    if len(check.errors) > errors:
        return None
    return {"name": name, "type": member.type, "parameters": member.parameters}


def _nn_inputs(
    raw: Mapping,
    fuzzy_sets: Mapping,
    indicators: Mapping,
    outputs: Mapping,
    timeframes: list[str],
    check: Check,
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
        if not isinstance(item, Mapping):
            check.error(path, "each input names exactly one of fuzzy_set or raw_indicator")
            continue
        spec = validate(NnInput, item, path, check)
        if (spec.fuzzy_set is None) == (spec.raw_indicator is None):
            continue  # said by NnInput
        tfs = _input_timeframes(spec.timeframes, timeframes, path, check)
        if spec.fuzzy_set is not None:
            entry = _fuzzy_input(spec.fuzzy_set, fuzzy_sets, raw.get("fuzzy_sets"), path, check)
        else:
            entry = _raw_input(spec, indicators, outputs, path, check)
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
    set_id: Any, fuzzy_sets: Mapping, declared: Any, path: str, check: Check
) -> dict | None:
    if isinstance(set_id, str) and isinstance(declared, Mapping) and set_id in declared:
        return {"fuzzy_set": set_id} if set_id in fuzzy_sets else None  # its own error is out
    known = (
        ", ".join(map(str, declared)) if isinstance(declared, Mapping) and declared else "(none)"
    )
    check.error(f"{path}.fuzzy_set", f"{show(set_id)} is not a fuzzy set; fuzzy sets are: {known}")
    return None


def _raw_input(
    spec: NnInput, indicators: Mapping, outputs: Mapping, path: str, check: Check
) -> dict | None:
    ref = _reference(spec.raw_indicator, f"{path}.raw_indicator", indicators, outputs, check)
    if ref is None:
        return None
    return {"raw_indicator": ref, "normalization": spec.normalization}


def _input_timeframes(
    value: Any, timeframes: list[str], path: str, check: Check
) -> list[str] | None:
    """``all`` means the training list, in its order; a list must come from it."""
    if value == "all":
        return list(timeframes)
    listed = [value] if isinstance(value, str) else text_list(value)
    allowed = "all or a list from " + ", ".join(timeframes)
    if listed is None:
        check.error(f"{path}.timeframes", f"{show(value)} is not allowed; {allowed}")
        return None
    bad = [tf for tf in listed if tf not in timeframes]
    for tf in bad:
        check.error(f"{path}.timeframes", f"{tf!r} is not a training timeframe; {allowed}")
    return None if bad else listed


def _unused_definitions(
    indicators: Mapping, fuzzy_sets: Mapping, nn_inputs: list, check: Check
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
