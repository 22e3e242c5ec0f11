"""Benchmark: how fast the read-only commands start (``ls``, ``models``, ``show ID``, ``--help``),
against ``python -c pass`` in the same run, this tree against the tree before issue 18's lazy
imports (a ``git archive`` of ``--before``, default e6925b5).

Run with ``python -m bench.bench_cli [--quick]``. One site for both trees: a spool with one job
trained through ``run --once`` (two epochs) and ``--jobs`` queued ones, and a model store with
that version copied to ``--versions`` versions. Each figure is the median wall time of
``--runs`` fresh processes, the commands and the two trees alternating within each round so a
load spike on the shared machine hits all alike. Also counted once per tree: which of torch,
pandas, pydantic and matplotlib each command imported.

Writes the ``## Read-only commands start-up`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.docs import parse_args, publish

REPO = Path(__file__).resolve().parents[1]
HEADING = "## Read-only commands start-up"
BEFORE = "e6925b5"
JOB = "strategy: rsi_minimal.yaml\nstart: 2017-06-01\nend: 2017-09-01\nseed: {seed}\n" \
      "overrides:\n  training:\n    epochs: 2\n"
HEAVY = ("torch", "pandas", "pydantic", "matplotlib")
PASS = "`python -c pass`"
# Runs the CLI as `ktrdr-daemon ARGS` does, then names the heavy modules it imported.
PROBE = f"""import runpy, sys
sys.argv = ["ktrdr-daemon", *sys.argv[1:]]
try:
    runpy.run_module("ktrdr_daemon.cli", run_name="__main__")
except SystemExit:
    pass
print("HEAVY=" + ",".join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
"""


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
    return {**env, "PYTHONPATH": str(root), "KTRDR_CONFIG": os.devnull}


def _cli(root: Path, site: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run([sys.executable, "-m", "ktrdr_daemon.cli", *args], cwd=site,
                          env=_env(root), capture_output=True, text=True, check=False,
                          timeout=600)
    if check and done.returncode != 0:
        raise RuntimeError(f"{args}: {done.stdout}{done.stderr}")
    return done.stdout


def make_site(site: Path, jobs: int, versions: int) -> str:
    """One trained job, ``jobs`` queued ones, ``versions`` versions; returns the trained id."""
    shutil.copytree(REPO / "config" / "strategies", site / "config" / "strategies")
    (site / "trained.yaml").write_text(JOB.format(seed=7))
    _cli(REPO, site, "submit", "trained.yaml")
    _cli(REPO, site, "run", "--once", "--no-show")
    sys.path.insert(0, str(REPO))
    from ktrdr_daemon import spool as sp
    from pipeline.versions import point_latest

    spool = sp.Spool(site / "spool")
    for i in range(jobs):  # accepted and queued: what a daemon that is busy leaves
        sp.submit_drop(spool, JOB.format(seed=100 + i).encode(), f"queued-{i:03d}.yaml")
    for drop in sp.Incoming(spool).complete_drops():
        sp.accept_drop(spool, drop)
    store = site / "models" / "rsi_minimal"
    for n in range(2, versions + 1):
        shutil.copytree(store / "1h_v1", store / f"1h_v{n}")
    point_latest(store, "1h")
    return "trained"


def export(commit: str, into: Path) -> Path:
    """The tree at ``commit`` (its Python packages), to run against the same site."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "pipeline", "ktrdr_daemon"], cwd=REPO,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def wall(argv: list[str], root: Path, site: Path) -> tuple[float, float]:
    """Wall seconds of one run, and its CPU seconds (user + system; less moved by load)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=site, env=_env(root), check=False, capture_output=True,
                   timeout=600)
    seconds = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime


def heavy(root: Path, site: Path, args: list[str]) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=site, env=_env(root),
                          capture_output=True, text=True, timeout=600)
    line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return line.removeprefix("HEAVY=") or "none" if line.startswith("HEAVY=") else "?"


Times = dict[str, dict[str, list[tuple[float, float]]]]


def measure(trees: dict[str, Path], site: Path, commands: dict[str, list[str]],
            runs: int) -> Times:
    """(wall, CPU) seconds of every command under every tree, ``runs`` rounds, order rotated."""
    times: Times = {t: {c: [] for c in commands} for t in trees}
    pairs = [(t, c) for c in commands for t in trees]
    for i in range(runs):
        shift = i % len(pairs)
        for tree, name in pairs[shift:] + pairs[:shift]:
            argv = ([sys.executable, "-c", "pass"] if name == PASS else
                    [sys.executable, "-m", "ktrdr_daemon.cli", *commands[name]])
            times[tree][name].append(wall(argv, trees[tree], site))
    return times


def main() -> None:
    args = parse_args(__doc__)
    runs, jobs, versions = (3, 20, 5) if args.quick else (11, 200, 20)
    load_before = "/".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        old = export(BEFORE, Path(tmp) / "before")
        site = Path(tmp) / "site"
        site.mkdir()
        job_id = make_site(site, jobs, versions)
        trees = {f"before ({BEFORE})": old, "after": REPO}
        commands = {PASS: [], "`--help`": ["--help"], "`ls`": ["ls"],
                    "`models`": ["models"], f"`show {job_id}`": ["show", job_id]}
        times = measure(trees, site, commands, runs)
        imported = {t: {c: heavy(root, site, argv) for c, argv in commands.items() if argv}
                    for t, root in trees.items()}
    load_after = "/".join(f"{x:.1f}" for x in os.getloadavg())
    text = section(times, imported, runs, jobs, versions, load_before, load_after)
    publish(HEADING, text, args)
    if args.no_write:
        print(json.dumps(times, indent=2))


def _median(runs: list[tuple[float, float]], which: int) -> float:
    return statistics.median(r[which] for r in runs)


def section(times: Times, imported: dict[str, dict[str, str]],
            runs: int, jobs: int, versions: int, load_before: str, load_after: str) -> str:
    """The doc section: the table of medians and ratios, then what each command imported."""
    before, after = list(times)
    # The same command under both trees: one baseline from all its runs.
    pooled = times[before][PASS] + times[after][PASS]
    base, base_cpu = _median(pooled, 0), _median(pooled, 1)
    rows = [f"| {PASS} (both trees' runs) | {base * 1000:.0f} | {base * 1000:.0f} | 1.00 | 1.0 "
            f"| 1.0 | {base_cpu * 1000:.0f} | {base_cpu * 1000:.0f} |"]
    for name in [c for c in times[after] if c != PASS]:
        b, a = _median(times[before][name], 0), _median(times[after][name], 0)
        bc, ac = _median(times[before][name], 1), _median(times[after][name], 1)
        rows.append(f"| {name} | {b * 1000:.0f} | {a * 1000:.0f} | {a / b:.2f} | "
                    f"{b / base:.1f} | {a / base:.1f} | {bc * 1000:.0f} | {ac * 1000:.0f} |")
    heavy_rows = [f"| {c} | {imported[before][c]} | {imported[after][c]} |"
                  for c in imported[after]]
    return "\n".join([
        HEADING, "",
        f"`python -m bench.bench_cli`: wall time of a fresh process, median of {runs}, the "
        f"tree before issue 18's lazy imports ({before.split()[-1].strip('()')}, `git archive`) "
        "and this one alternating within each round, against one site: a spool with one job "
        f"trained by `run --once` and {jobs} queued ones, a store with {versions} versions "
        f"(`models` also reads the 5 example strategy files). Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load {load_before} -> "
        f"{load_after} (a shared machine: other agents ran tests throughout).", "",
        "| command | before (ms) | after (ms) | after / before | before / `python -c pass` "
        "| after / `python -c pass` | CPU before (ms) | CPU after (ms) |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        "Wall and CPU (user + system of the process) are medians; the ratios are of wall "
        "times.", "",
        "Heavy modules each command imported (of torch, pandas, pydantic, matplotlib):", "",
        "| command | before | after |", "|---|---|---|", *heavy_rows, "",
        "The commands now import torch, pandas and pydantic only where they are used: the spool "
        "reads the job file's spool keys through pipeline.job, which loads the strategy schema "
        "only in `load_job`; `models` lists the store through the torch-free pipeline/versions.py "
        "and reads the strategies root's names with the YAML loader alone. "
        "tests/test_walkthrough_models.py checks that ls, show, models, daemons, tail, cancel, "
        "retry and --help import none of the four (and submit no torch).",
    ])


if __name__ == "__main__":
    main()
