"""How ``ls`` draws its rows for a person: the table, the summary line, colour and width.

Every cell that came from the spool goes through :func:`printable` before it is measured or
coloured, so a job's error, a daemon's name or a drop's file name can never move the cursor.
Colour is plain SGR codes (importing rich costs more than listing 10,000 jobs): on a terminal,
unless ``NO_COLOR`` is set or ``--color never``; never in a pipe or file unless ``--color
always``. Notes fill the terminal's width and are cut with an ellipsis there; in a pipe or a
file they are printed in full.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from ktrdr_daemon.cli_support import STATES, age
from ktrdr_daemon.safe_text import printable

STATE_COLOURS = {"queued": "33", "running": "36", "completed": "32", "failed": "31",
                 "cancelled": "35"}
BOLD = "1"


def use_colour(choice: str, stream: TextIO) -> bool:
    """``--color``: always, never, or auto (a terminal, NO_COLOR unset or empty, TERM not
    dumb; see https://no-color.org)."""
    if choice in ("always", "never"):
        return choice == "always"
    return (stream.isatty() and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb")


def paint(text: str, code: str | None, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def note(row: dict[str, Any]) -> str:
    """The NOTE column: where a job waits or runs, or why it failed (one line)."""
    text = ""
    if not row["accepted"] and row["state"] == "queued":
        text = "in incoming/: waiting for a daemon to accept it"
    elif row["state"] == "running" and row["epoch"] is not None:
        text = f"epoch {row['epoch']}/{row['epochs']} on {row['daemon']}"
    elif row["state"] == "running":
        text = f"on {row['daemon']}"
    elif row["error"]:
        text = " ".join(str(row["error"]).split())  # every line of it, as one
    if row["cancel_requested"] and row["state"] in ("running", "queued"):
        text = "cancel requested" + (f"; {text}" if text else "")
    if row.get("group"):
        text = f"[{row['group']}] {text}".rstrip()
    return text


def _cells(row: dict[str, Any]) -> list[str]:
    percent = f"{row['percent']:.1f}%" if isinstance(row["percent"], int | float) else "-"
    position = row.get("queue_position")
    return [printable(str(value)) for value in (
        row["id"], row["state"], row.get("priority", 0),
        "-" if position is None else position, percent, row["device"] or "-",
        row["attempt"], age(row["age_seconds"]))]


HEADER = ["ID", "STATE", "PRI", "POS", "PROGRESS", "DEVICE", "ATTEMPT", "AGE"]
_RIGHT = {2, 3, 4, 6, 7}  # right-aligned columns (numbers)


def render_table(rows: Sequence[dict[str, Any]], *, colour: bool, width: int | None,
                 filtered: bool = False) -> str:
    """The table and summary; ``width`` is the terminal's (notes cut to fit) or None (full)."""
    cells = [_cells(r) for r in rows]
    sizes = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADER)]
    sizes[0] = max(sizes[0], 12)

    def line(values: list[str], state: str | None) -> str:
        parts = [v.rjust(sizes[i]) if i in _RIGHT else v.ljust(sizes[i])
                 for i, v in enumerate(values)]
        if state is not None:
            parts[1] = paint(parts[1], STATE_COLOURS.get(state), colour)
        return "  ".join(parts)

    lead = sum(sizes) + 2 * len(sizes)  # where NOTE starts
    out = [paint(line(HEADER, None) + "  NOTE", BOLD, colour)]
    for row, values in zip(rows, cells, strict=True):
        text = printable(note(row))
        if width is not None and lead + len(text) > width:
            room = max(width - lead, 20)
            text = text if len(text) <= room else text[: room - 1] + "…"
        out.append((line(values, row["state"]) + "  " + text).rstrip())
    out.append(summary(rows, colour=colour, filtered=filtered))
    return "\n".join(out) + "\n"


def summary(rows: Sequence[dict[str, Any]], *, colour: bool = False,
            filtered: bool = False) -> str:
    """``12 jobs: 3 queued, 1 running, 7 completed, 1 failed`` (states in lifecycle order)."""
    counts = Counter(r["state"] for r in rows)
    parts = [paint(f"{counts[s]} {s}", STATE_COLOURS[s], colour) for s in STATES if counts[s]]
    noun = "job" if len(rows) == 1 else "jobs"
    return f"{len(rows)} {noun}{' matching' if filtered else ''}: {', '.join(parts)}"


def terminal_width(stream: TextIO) -> int | None:
    """The terminal's columns, or None when ``stream`` is not a terminal (print in full)."""
    if not stream.isatty():
        return None
    return shutil.get_terminal_size((100, 24)).columns
