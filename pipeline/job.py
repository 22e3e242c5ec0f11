"""What to train: a job file (spool spec section 2) or a bare KTRDR v3 strategy, normalized.

Both the daemon and ``ktrdr-daemon train`` read jobs through :func:`load_job`, so one file trains
the same way on either path. Job files are untrusted data: ``yaml.safe_load`` only, and a strategy
path must resolve (symlinks included) inside the strategies root.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline import safe_yaml
from pipeline.errors import StrategyError
from pipeline.schema.keys import near_miss

if TYPE_CHECKING:  # pipeline.strategy pulls pydantic and pandas: only load_job needs it, and
    # the spool's readers (ls, show, cancel) import this module for parse_execution alone.
    from pipeline.strategy import Strategy

JOB_KEYS = ("strategy", "symbols", "timeframes", "start", "end", "seed", "priority",
            "execution", "overrides", "group")
# A group tags related jobs (``submit --seeds`` sets one; ``ls --group`` filters on it): a safe
# name, so it can be printed, matched and used in a file name as it is.
GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MODES = {"auto": "auto", "local": "local", "gpu": "gpu", "host": "gpu"}
EXECUTION_DEFAULTS: dict[str, Any] = {
    "mode": "auto", "require_gpu": False, "max_attempts": 3, "wait_for_gpu": 0,
}


@dataclass
class Job:
    """A job ready to run: the strategy with the job's overrides applied, and how to run it."""

    strategy: Strategy
    priority: int = 0
    execution: dict[str, Any] = field(default_factory=lambda: dict(EXECUTION_DEFAULTS))
    normalized: dict[str, Any] = field(default_factory=dict)  # what job.yaml holds
    warnings: list[str] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return int(self.strategy.training.get("seed") or 0)


def parse_yaml(text: bytes | str, source: str) -> Any:
    """The safe loader (:mod:`pipeline.safe_yaml`), with a message that names the file and the
    line of the problem."""
    try:
        return safe_yaml.load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StrategyError([f"not valid YAML{at}: {problem}"], source) from None


def confined_path(root: Path, name: str, what: str) -> Path:
    """Resolve ``name`` under ``root``; refuse anything that ends up outside it."""
    root = root.resolve()
    candidate = (root / name).resolve()
    if candidate != root and root not in candidate.parents:
        raise ValueError(f"{what} {name!r} escapes its root {root}")
    return candidate


def load_job(
    source: Path | str | Mapping[str, Any] | bytes,
    *,
    strategies_root: Path | None = None,
    source_name: str | None = None,
    strict: bool = False,
) -> Job:
    """Read a job file or a bare v3 strategy and return a :class:`Job`.

    ``source`` is a path, raw bytes (a spool drop) or an already parsed mapping. All problems of
    the job part are reported together, then the strategy's (which reports all of its own).
    """
    from pipeline.strategy import is_v3_strategy, load_strategy

    name, data = _read(source, source_name)
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise StrategyError([f"the file is {kind}; expected a mapping (a job or a strategy)"],
                            name)
    base_dir = Path(source).parent if isinstance(source, (str, Path)) else None
    if is_v3_strategy(data):
        strategy = _named(name, load_strategy, data, strict=strict, base_dir=base_dir)
        job_part: Mapping[str, Any] = {}
        execution, priority = dict(EXECUTION_DEFAULTS), 0
    else:
        strategy_data, overrides, job_part = _job_parts(data, name, strategies_root, base_dir)
        # _job_parts has already reported any problem here, together with its own.
        execution, priority = parse_execution(job_part, [])
        strategy = _named(name, load_strategy, strategy_data, strict=strict,
                          overrides=overrides, base_dir=base_dir)
    normalized = {
        "strategy": strategy.raw, "priority": priority, "execution": execution,
        **{k: job_part[k] for k in ("symbols", "timeframes", "start", "end", "seed", "group")
           if k in job_part},
    }
    return Job(strategy=strategy, priority=priority, execution=execution,
               normalized=_jsonable(normalized), warnings=list(strategy.warnings))


def _meant(key: Any) -> str:
    """"did you mean 'overrides'? " for a near miss of a job key, else nothing."""
    meant = near_miss(str(key), JOB_KEYS)
    return f"did you mean {meant!r}? " if meant else ""


def _named(name: str, load: Any, *args: Any, **kwargs: Any) -> Strategy:
    """Load the strategy; its errors and its ``source`` name the job's file, not ``<inline>``."""
    try:
        strategy = load(*args, **kwargs)
    except StrategyError as exc:
        raise StrategyError(exc.errors, name) from None
    strategy.source = name
    return strategy


def _read(source: Path | str | Mapping | bytes, source_name: str | None) -> tuple[str, Any]:
    if isinstance(source, Mapping):
        return source_name or "<inline>", copy.deepcopy(dict(source))
    if isinstance(source, bytes):
        name = source_name or "<bytes>"
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError:
            problem = "not a text file (it is not UTF-8); expected YAML"
            raise StrategyError([problem], name) from None
        return name, parse_yaml(text, name)
    path = Path(source)
    name = source_name or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StrategyError([f"cannot read the file: {exc.strerror}"], name) from None
    return _read(raw, name)


def _job_parts(
    data: Mapping[str, Any], name: str, strategies_root: Path | None, base_dir: Path | None
) -> tuple[dict, dict, Mapping[str, Any]]:
    """Split a job file into (strategy mapping, overrides to merge, job keys); collect errors."""
    from pipeline.strategy import deep_merge

    errors = [f"{key}: unknown job key; {_meant(key)}job keys are: {', '.join(JOB_KEYS)}"
              for key in data if key not in JOB_KEYS]
    strategy_data: dict = {}
    ref = data.get("strategy")
    if ref is None:
        errors.append("strategy: missing; give a strategy file name under the strategies root, "
                      "or an inline strategy mapping (or drop a KTRDR v3 strategy file itself)")
    elif isinstance(ref, Mapping):
        strategy_data = dict(ref)
    elif isinstance(ref, str):
        strategy_data = _strategy_file(ref, strategies_root, base_dir, errors)
    else:
        errors.append(f"strategy: expected a file name or a mapping, got {type(ref).__name__}")
    overrides: dict = {}
    for key in ("symbols", "timeframes"):
        if key in data:
            values = data[key]
            if isinstance(values, str):
                values = [values]
            if (not isinstance(values, list) or not values
                    or not all(isinstance(v, str) for v in values)):
                errors.append(f"{key}: expected a list of names like [EURUSD], got {values!r}")
                continue
            # Replace the whole section: merged into it, a job's [SP500] would leave the
            # strategy's old `list:` or `base_timeframe:` beside it in the config we save.
            section = strategy_data.get("training_data")
            if section is None or isinstance(section, Mapping):
                strategy_data = {**strategy_data, "training_data": {
                    **(section or {}), key: _list_mode(key, values)}}
    for key, target in (("start", "start_date"), ("end", "end_date")):
        if key in data:
            value = data[key]
            if not isinstance(value, (str, dt.date)):
                errors.append(f"{key}: expected a date like 2017-05-01, got {value!r}")
                continue
            overrides = deep_merge(overrides, {"training_data": {target: str(value)}})
    if "seed" in data:
        if type(data["seed"]) is not int:
            errors.append(f"seed: expected an integer, got {data['seed']!r}")
        else:
            overrides = deep_merge(overrides, {"training": {"seed": data["seed"]}})
    if "group" in data and not is_group_name(data["group"]):
        errors.append(f"group: {data['group']!r} is not a group name; use 1 to 64 letters, "
                      "digits, '_', '.' or '-', not starting with '.' or '-'")
    extra = data.get("overrides", {})
    if not isinstance(extra, Mapping):
        errors.append(f"overrides: expected a mapping merged into the strategy, got {extra!r}")
    else:
        overrides = deep_merge(overrides, extra)
    parse_execution(data, errors)
    if errors:
        raise StrategyError(errors, name)
    return strategy_data, overrides, data


def is_group_name(value: Any) -> bool:
    return isinstance(value, str) and GROUP_NAME.fullmatch(value) is not None


def _list_mode(key: str, values: list[str]) -> dict:
    if key == "symbols":
        return ({"mode": "single", "symbol": values[0]} if len(values) == 1
                else {"mode": "multi_symbol", "list": values})
    if len(values) == 1:
        return {"mode": "single", "timeframe": values[0]}
    return {"mode": "multi_timeframe", "list": values, "base_timeframe": values[0]}


def _strategy_file(
    ref: str, strategies_root: Path | None, base_dir: Path | None, errors: list[str]
) -> dict:
    roots = [r for r in (strategies_root, base_dir) if r is not None]
    if not roots:
        errors.append(f"strategy: {ref!r} is a file name but no strategies root is configured "
                      "(set --strategies or KTRDR_STRATEGIES)")
        return {}
    tried = []
    for root in roots:
        try:
            path = confined_path(root, ref, "strategy")
        except ValueError as exc:
            errors.append(f"strategy: {exc}")
            return {}
        if path.is_file():
            data = parse_yaml(path.read_bytes(), str(path))
            if not isinstance(data, Mapping):
                errors.append(f"strategy: {path} does not hold a mapping")
                return {}
            return dict(data)
        tried.append(str(root.resolve()))
    errors.append(f"strategy: no file {ref!r} under {' or '.join(tried)}")
    return {}


def parse_execution(job: Mapping[str, Any], errors: list[str]) -> tuple[dict[str, Any], int]:
    """The execution settings and priority, defaults filled; problems are appended to ``errors``.

    The one parser of these keys: the spool calls it too when it accepts a drop."""
    execution = dict(EXECUTION_DEFAULTS)
    given = job.get("execution", {}) or {}
    if not isinstance(given, Mapping):
        errors.append(f"execution: expected a mapping, got {given!r}")
        given = {}
    for key, value in given.items():
        if key not in EXECUTION_DEFAULTS:
            errors.append(f"execution.{key}: unknown key; allowed: {', '.join(EXECUTION_DEFAULTS)}")
        elif key == "mode":
            if value not in MODES:
                errors.append(f"execution.mode: {value!r} is not allowed; "
                              "allowed: auto, local, gpu (host is accepted for gpu)")
            else:
                execution["mode"] = MODES[value]
        elif key == "require_gpu":
            if not isinstance(value, bool):
                errors.append(f"execution.require_gpu: expected true or false, got {value!r}")
            else:
                execution[key] = value
        elif key == "max_attempts" and (type(value) is not int or value < 1):
            errors.append(f"execution.max_attempts: expected an integer >= 1, got {value!r}")
        elif key == "wait_for_gpu" and (type(value) not in (int, float)
                                        or not math.isfinite(value) or value < 0):
            # NaN compares false to everything: it would pass "< 0" and never expire.
            errors.append(f"execution.wait_for_gpu: expected a finite number of seconds >= 0, "
                          f"got {value!r}")
        else:
            execution[key] = value
    priority = job.get("priority", 0)
    if type(priority) is not int:
        errors.append(f"priority: expected an integer (higher runs first), got {priority!r}")
        priority = 0
    return execution, priority


def _jsonable(value: Any) -> Any:
    """Dates from YAML become ISO strings so job.yaml and config.json stay plain data."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value
