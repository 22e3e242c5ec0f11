"""YAML in and out with PyYAML's safe loader and dumper, in C (libyaml) where PyYAML has it.

The C classes are the same safe loader and dumper (plain data only, never objects), ~10x
faster: a dropped job is parsed and its resolved strategy written out while the user waits for
the claim (the pure-Python pair took ~8 of the ~13 ms of accepting a drop).
"""

from __future__ import annotations

from typing import Any

import yaml

LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(text: str | bytes) -> Any:
    """``yaml.safe_load``, faster: plain mappings, lists, strings, numbers, dates only."""
    return yaml.load(text, Loader=LOADER)  # noqa: S506  (a safe loader)


def dump(data: Any) -> str:
    """``yaml.safe_dump`` keeping key order, faster."""
    return yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True)
