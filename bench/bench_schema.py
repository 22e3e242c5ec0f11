"""What the pydantic strategy schema adds to start-up: ``ktrdr-daemon --help`` and loading a
strategy file in a fresh process, this tree against the tree before the schema (a ``git
archive`` of ``--before``, default the commit this branch started from), plus pydantic's own
import and the schema modules' share from ``python -X importtime``.

Each figure is the best of ``--runs`` fresh processes, before and after alternating so a load
spike on the shared machine hits both alike; best-of is the figure least disturbed by load.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.docs import write_section

REPO = Path(__file__).resolve().parents[1]
HEADING = "## Strategy schema start-up (pydantic)"
STRATEGY = REPO / "tests" / "data" / "ktrdr_v3_full.yaml"
LOAD = f"from pipeline.strategy import load_strategy; load_strategy({str(STRATEGY)!r})"
SCHEMA_MODULES = re.compile(r"^(pydantic|pydantic_core|annotated_types|typing_inspection"
                            r"|pipeline\.schema)(\.|$)")


def wall(argv: list[str], root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root), "KTRDR_CONFIG": "/nonexistent/daemon.yaml"}
    start = time.perf_counter()
    subprocess.run(argv, cwd=root, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def schema_import_ms(root: Path) -> float:
    """Self time of pydantic and pipeline.schema modules while loading a strategy."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", LOAD], cwd=root, env=env,
                          check=True, capture_output=True, text=True)
    total = 0
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and SCHEMA_MODULES.match(parts[2].strip()):
            total += int(parts[0].split(":")[1])
    return total / 1000


def in_process_load_ms(root: Path, runs: int) -> float:
    code = (f"import time; {LOAD.split(';')[0]}; load_strategy({str(STRATEGY)!r}); "
            f"t = []\nfor _ in range({runs}):\n s = time.perf_counter(); "
            f"load_strategy({str(STRATEGY)!r}); t.append(time.perf_counter() - s)\n"
            "print(min(t) * 1000)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip())


def export(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", commit, "pipeline", "ktrdr_daemon", "tests/data"],
                             cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="997d5e5", help="the commit before the schema")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = "/".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        old = export(args.before, Path(tmp))
        commands = {"`ktrdr-daemon --help`": [sys.executable, "-m", "ktrdr_daemon.cli", "--help"],
                    "load ktrdr_v3_full.yaml (fresh process)": [sys.executable, "-c", LOAD],
                    "`python -c pass`": [sys.executable, "-c", "pass"]}
        best = {name: {"before": 1e9, "after": 1e9} for name in commands}
        for argv in commands.values():  # untimed: writes each tree's .pyc files
            for root in (old, REPO):
                wall(argv, root)
        for _ in range(args.runs):
            for name, argv in commands.items():
                for label, root in (("before", old), ("after", REPO)):
                    best[name][label] = min(best[name][label], wall(argv, root))
        per_load = {label: in_process_load_ms(root, 50) for label, root in
                    (("before", old), ("after", REPO))}
        schema_ms = min(schema_import_ms(REPO) for _ in range(args.runs))
    load_after = "/".join(f"{x:.1f}" for x in os.getloadavg())
    rows = [f"| {name} | {b['before']:.3f} | {b['after']:.3f} | {b['after'] - b['before']:+.3f} |"
            for name, b in best.items()]
    rows.append(f"| one more load in a warm process (ms) | {per_load['before']:.2f} | "
                f"{per_load['after']:.2f} | {per_load['after'] - per_load['before']:+.2f} |")
    text = "\n".join([
        HEADING, "",
        f"`python -m bench.bench_schema`: wall time in seconds, best of {args.runs} fresh "
        f"processes, the tree before the schema (`{args.before}`) and this one alternating; the "
        "v3 full file (every section, KTRDR's ignored keys). Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load {load_before} -> {load_after} (a shared machine: other agents' jobs ran "
        "throughout, so each figure is an upper bound and the differences are rough).", "",
        "| what | before (s) | after (s) | added |", "|---|---|---|---|", *rows, "",
        f"Import self time of pydantic, pydantic_core and pipeline.schema (`-X importtime`, "
        f"best of {args.runs}): {schema_ms:.0f} ms. `--help` pays it because "
        "ktrdr_daemon.commands imports the spool, the job loader and so the strategy loader "
        "(and pandas) at start; once those imports are lazy, only commands that load a "
        "strategy pay it."])
    print(text)
    if not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
