"""Reading a job file's top-level lines without building YAML objects.

``job.yaml`` is written by one dumper, block style, one key a line, the spool's own keys first
(:func:`ktrdr_daemon.spool.finish_accept`). Constructing even its ten header lines through
PyYAML costs ~0.2 ms a job (the constructor is Python even over libyaml): two seconds for
``ls`` or a daemon's first rescan over 10,000 queued jobs. The lines in that plain form are
read here directly; every value is one the YAML resolver itself would give, and whatever is
not plainly so (a hand edit, a flow collection, a comment, an odd number) is
:data:`UNSURE`, so the caller parses with YAML as before. This is never a second YAML parser:
it only recognises the few forms the dumper writes, and declines the rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ktrdr_daemon.atomic import read_bounded
from ktrdr_daemon.untrusted_yaml import MAX_DROP_BYTES, _Loader

UNSURE: Any = object()  # "ask the YAML parser"
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})\.[0-9]{1,17}")
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_KEY = re.compile(rb"[a-z_][a-z0-9_]*")
_STR_TAG = "tag:yaml.org,2002:str"
_resolver = yaml.resolver.Resolver()
# The first characters of every implicit type (bool, int, float, null, timestamp, ...), from
# PyYAML's own table: a plain scalar starting with any other character is a string.
_RESOLVED_FIRST = {c for c in yaml.resolver.Resolver.yaml_implicit_resolvers if c}


def plain_scalar(raw: bytes) -> Any:
    """The value of a one-line scalar as the safe loader reads it, or :data:`UNSURE`."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return UNSURE
    first = text[:1]
    if first == "'":
        return text[1:-1] if len(text) >= 2 and "'" not in text[1:-1] and text[-1] == "'" \
            else UNSURE
    if first not in _RESOLVED_FIRST:  # no implicit type starts with it: a string, if plain
        return text if _PLAIN.fullmatch(text) else UNSURE
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if not _PLAIN.fullmatch(text):
        return UNSURE
    if text in ("true", "false"):
        return text == "true"
    if _resolver.resolve(yaml.ScalarNode, text, (True, False)) == _STR_TAG:
        return text  # e.g. a hex token, "normal": the resolver says a string
    return UNSURE


def plain_header(lines: list[bytes]) -> dict[str, Any] | None:
    """``key: scalar`` lines with one level of ``  key: scalar`` under a ``key:`` line, as the
    dumper writes job.yaml's header; None when any line is in another form."""
    top: dict[str, Any] = {}
    nested: dict[str, Any] | None = None
    for line in lines:
        if line[:2] == b"  ":
            if nested is None:
                return None
            target, line = nested, line[2:]
        else:
            target, nested = top, None
        key, sep, raw = line.partition(b": ")
        if not sep:
            if target is top and line[-1:] == b":" and _KEY.fullmatch(line[:-1]):
                nested = top.setdefault(line[:-1].decode(), {})
                if nested:
                    return None  # a repeated key
                continue
            return None
        name = key.decode()
        if not _KEY.fullmatch(key) or name in target:
            return None
        value = plain_scalar(raw)
        if value is UNSURE:
            return None
        target[name] = value
    return top


def _top_level(data: bytes, key: bytes) -> bytes | None:
    """The raw value of the first top-level ``key:`` line of ``data``, or None."""
    if data.startswith(key + b":"):
        at = 0
    elif (at := data.find(b"\n" + key + b":")) < 0:
        return None
    else:
        at += 1
    start = at + len(key) + 1
    end = data.find(b"\n", start)
    return data[start:None if end < 0 else end].strip(b" \t\r")


def _value(data: bytes, key: bytes) -> Any:
    """A top-level key's scalar (via YAML when not plain), None when absent or not a scalar."""
    raw = _top_level(data, key)
    if not raw:
        return None
    value = plain_scalar(raw)
    if value is UNSURE:
        try:
            value = yaml.load(b"v: " + raw, Loader=_Loader)["v"]  # safe loader
        except (yaml.YAMLError, TypeError, KeyError):
            return None
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def job_tags(data: bytes) -> dict[str, Any]:
    """``priority`` (0 unless an integer), ``strategy`` and ``group`` of a job file's bytes."""
    name = _value(data, b"strategy_name")  # an accepted, validated job
    if name is None:
        name = _value(data, b"strategy")
        if isinstance(name, str):  # a file under the strategies root: its stem is the name
            name = name.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
        elif name is None:
            name = _value(data, b"name")  # a dropped v3 strategy
    priority, group = _value(data, b"priority"), _value(data, b"group")
    return {"priority": priority if type(priority) is int else 0,
            "strategy": None if name is None else str(name),
            "group": None if group is None else str(group)}


def read_job_tags(path: Path) -> dict[str, Any]:
    """What ``ls`` shows and filters on from a job file (``job.yaml``, or a drop not accepted
    yet): ``priority`` (0 when absent), ``strategy`` (``strategy_name``, the strategy file's
    stem, or a dropped strategy's ``name``) and ``group``; None where absent.

    Read off the top-level lines with ``bytes.find``: ``ls`` over 10,000 jobs pays one small
    read each (~20 us; no cache: ``ls`` is one short process that reads each job once). An
    unreadable file (gone, a FIFO, a link) reads as no tags.
    """
    try:
        data = read_bounded(path, MAX_DROP_BYTES * 2)
    except OSError:
        data = b""
    return job_tags(data)
