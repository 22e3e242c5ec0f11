"""What ``submit --set KEY=VALUE --priority N --seeds 1-10 --group NAME`` does to a file before
it is dropped: the drop is rewritten, the user's file on disk is never touched.

A job file keeps its keys and gets the edits. A bare KTRDR v3 strategy file is wrapped into a
job file: ``strategy: <its path under the strategies root>`` when it lies there (the spool's
confinement rule), else the strategy inline as a mapping, which needs no path at all.

``--set`` routes by its first dotted part: a job key (``seed``, ``start``, ``execution.
max_attempts``, ...) is set in the job; anything else is a strategy key and goes under
``overrides`` (``training.epochs=5`` -> ``overrides: {training: {epochs: 5}}``). The value is
YAML (``yaml.safe_load``), so ``5`` is an integer and ``[EURUSD, GBPUSD]`` a list.
"""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import safe_yaml
from pipeline.job import JOB_KEYS, is_group_name
from pipeline.strategy import is_v3_strategy

MAX_SEEDS = 1000  # one drop each: a typo like 1-100000 must not flood the spool
_SEED_PART = re.compile(r"(\d+)(?:-(\d+))?")


class EditError(ValueError):
    """A ``--set``, ``--seeds`` or ``--group`` the user must fix (a usage error)."""


@dataclass
class Edits:
    """The rewriting options of one ``submit``; empty means "drop the file's bytes as they are"."""

    sets: list[tuple[list[str], Any]] = field(default_factory=list)
    priority: int | None = None
    seeds: list[int] = field(default_factory=list)
    group: str | None = None

    @property
    def empty(self) -> bool:
        return not self.sets and self.priority is None and not self.seeds and self.group is None


def parse_set(text: str) -> tuple[list[str], Any]:
    """``training.epochs=5`` -> (["training", "epochs"], 5)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise EditError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY, "
                        "e.g. training.epochs=5 or seed=7")
    try:
        value = safe_yaml.load(raw) if raw.strip() else None
    except Exception as exc:  # yaml.YAMLError, said in one line
        raise EditError(f"--set {text!r}: the value is not YAML: "
                        f"{str(exc).splitlines()[0]}") from None
    return [p.strip() for p in parts], value


def parse_seeds(text: str) -> list[int]:
    """``1-10``, ``1,3,5`` or ``1-3,7`` -> the seeds in order, each once."""
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        match = _SEED_PART.fullmatch(part)
        if not match:
            raise EditError(f"--seeds {text!r}: use ranges and lists of integers >= 0, "
                            "e.g. 1-10, 1,3,5 or 1-3,7")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise EditError(f"--seeds {text!r}: the range {part} runs backwards")
        if high - low + 1 > MAX_SEEDS:
            raise EditError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds")
        seeds.extend(n for n in range(low, high + 1) if n not in seeds)
    if len(seeds) > MAX_SEEDS:
        raise EditError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds")
    return seeds


def check_group(name: str) -> str:
    if not is_group_name(name):
        raise EditError(f"--group {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', "
                        "not starting with '.' or '-'")
    return name


def default_group(path: Path) -> str:
    """``<file stem>-<6 hex>``: the file's name, unique per submission."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem.split(".")[0]).lstrip(".-")[:50] or "group"
    return f"{stem}-{secrets.token_hex(3)}"


def as_job(doc: dict[str, Any], path: Path, strategies_root: Path) -> dict[str, Any]:
    """A job file for ``doc``: itself (a copy) when it is one; a bare strategy wrapped."""
    if not is_v3_strategy(doc):
        return copy.deepcopy(doc)
    root = strategies_root.resolve()
    where = path.resolve()
    if root in where.parents:  # referenced by path, as a user would write it
        return {"strategy": str(where.relative_to(root))}
    return {"strategy": copy.deepcopy(doc)}


def apply(job: dict[str, Any], edits: Edits, seed: int | None = None) -> dict[str, Any]:
    """``job`` with the edits applied (``seed``: this drop's seed of ``--seeds``)."""
    job = copy.deepcopy(job)
    for keys, value in edits.sets:
        if keys[0] in JOB_KEYS:
            _set_in(job, keys, value)
        else:
            _set_in(job, ["overrides", *keys], value)
    if edits.priority is not None:
        job["priority"] = edits.priority
    if seed is not None:
        job["seed"] = seed
    if edits.group is not None:
        job["group"] = edits.group
    return job


def _set_in(mapping: dict[str, Any], keys: list[str], value: Any) -> None:
    node = mapping
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise EditError(f"--set {'.'.join(keys)}: {where} is {child!r} in the file, "
                            "not a mapping to set a key in")
        node = child
    node[keys[-1]] = value


def dump(job: dict[str, Any]) -> bytes:
    return safe_yaml.dump(job).encode()


def drops_for(path: Path, data: bytes, edits: Edits,
              strategies_root: Path) -> list[tuple[str, bytes]]:
    """The (file name, bytes) to drop for the user's file ``path`` holding ``data``: the bytes
    as they are without edits, else one rewritten job (one per seed with ``--seeds``)."""
    if edits.empty:
        return [(path.name, data)]
    from ktrdr_daemon.untrusted_yaml import load_job_mapping

    job = as_job(load_job_mapping(data, path.name), path, strategies_root)
    if not edits.seeds:
        return [(path.name, dump(apply(job, edits)))]
    stem = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
    return [(f"{stem}-seed{n}.yaml", dump(apply(job, edits, seed=n))) for n in edits.seeds]
