"""Writing results into docs/benchmarks.md: each benchmark owns one ``## `` section."""

from __future__ import annotations

import argparse
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


def parse_args(doc: str) -> argparse.Namespace:
    """The options every benchmark takes: ``--quick`` (a smoke run) and ``--no-write``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    return parser.parse_args()


def table_section(heading: str, intro: str, rows: list[str], notes: str) -> str:
    """A section: heading, the method in a paragraph, the table of results, notes."""
    return "\n".join([heading, "", intro, "", "| what | measured | goal | met | load |",
                      "|---|---|---|---|---|", *rows, "", notes])


def publish(heading: str, text: str, args: argparse.Namespace) -> None:
    """Print a benchmark's section, and write it into the doc unless ``--no-write``."""
    print(text)
    if not args.no_write:
        write_section(heading, text)
        print(f"wrote {heading!r} in {DOC.relative_to(DOC.parent.parent)}")
