"""Writing results into docs/benchmarks.md: each benchmark owns one ``## `` section."""

from __future__ import annotations

import os
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, text: str, doc: Path = DOC) -> None:
    """Replace the section that starts with ``heading`` (or append it), atomically.

    The file is read right before writing because several benchmarks update it.
    """
    old = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    lines = old.rstrip("\n").split("\n")
    new = text.rstrip("\n").split("\n")
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
        lines = lines[:start] + new + [""] + (lines[end:] if end is not None else [])
    else:
        lines += [""] + new
    doc.parent.mkdir(parents=True, exist_ok=True)
    temp = doc.with_name(f".{doc.name}.{os.getpid()}.tmp")
    temp.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    temp.replace(doc)
