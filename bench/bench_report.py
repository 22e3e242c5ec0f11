"""Benchmark: drawing ``report.png``, before and after it was made cheaper; and the report
pictures in docs/.

Run with ``python -m bench.bench_report``. Trains ``config/strategies/multi_indicator.yaml``
(a classifier) and ``forward_return.yaml`` (a regression) once each into a temporary model
store (CPU, one thread), then draws each version's report with two implementations in one
process, interleaved: this checkout's :mod:`pipeline.report`, and the one of git revision
``--before`` (default: the last one before the change, a file that needs only matplotlib,
loaded from ``git show``). One untimed draw of each first (fonts and caches), then ``REPEATS``
timed ones; the medians and their ratio go in docs/benchmarks.md. ``--pictures`` also copies
the two fresh reports to docs/report_multi_indicator.png and docs/report_forward_return.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import matplotlib

from bench.docs import DOC, write_section
from pipeline import report
from pipeline.job import load_job
from pipeline.market_data import default_data_root
from pipeline.run import run_training

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = REPO / "config" / "strategies"
MODELS = ("multi_indicator", "forward_return")
BEFORE = "e6925b5"  # constrained layout, zlib level 6, five panels
REPEATS = 7
HEADING = "## Drawing the training report"


def old_report(rev: str) -> ModuleType:
    """``pipeline/report.py`` as it was at ``rev``, as a module of its own."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:pipeline/report.py"],
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader(f"report_{rev}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:pipeline/report.py", "exec"), module.__dict__)
    return module


def draw_seconds(module: ModuleType, folder: Path, out: Path) -> float:
    """CPU seconds of this process (not wall time: the machine is shared, and other work's
    share of the cores is not the report's cost)."""
    start = time.process_time()
    module.write_report(module.report_data_from_version(folder), out)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git revision to compare against")
    parser.add_argument("--pictures", action="store_true", help="write the docs/ pictures")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    args = parser.parse_args()
    before = old_report(args.before)
    load = os.getloadavg()[0]
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for name in MODELS:
            job = load_job(STRATEGIES / f"{name}.yaml")
            folder = run_training(job, data_root=default_data_root(), models_root=Path(tmp),
                                  device="cpu", threads=1).model_path
            if args.pictures:
                shutil.copyfile(folder / report.REPORT_FILE, REPO / "docs" / f"report_{name}.png")
            times: dict[str, list[float]] = {"before": [], "after": []}
            sizes = {}
            for label, module in (("before", before), ("after", report)):
                out = Path(tmp) / f"{name}_{label}.png"
                draw_seconds(module, folder, out)  # warm-up
                sizes[label] = out.stat().st_size
            for _ in range(REPEATS):
                for label, module in (("before", before), ("after", report)):
                    times[label].append(draw_seconds(module, folder, Path(tmp) / "r.png"))
            old, new = (statistics.median(times[k]) for k in ("before", "after"))
            panels = len(report.report_data_from_version(folder).panels())
            rows.append(f"| {name} | {old:.3f} | {new:.3f} | {new / old:.2f} | "
                        f"{sizes['before'] // 1000} kB -> {sizes['after'] // 1000} kB | "
                        f"{panels} |")
            notes.append(f"{name}: before {', '.join(f'{t:.3f}' for t in times['before'])}; "
                         f"after {', '.join(f'{t:.3f}' for t in times['after'])}")
            print(rows[-1], flush=True)
    text = "\n".join([
        HEADING, "",
        f"`python -m bench.bench_report`: each example trained once, then its saved version's "
        f"`report.png` drawn by `write_report` (read the files, draw, PNG, fsync), {REPEATS} "
        f"times each, interleaved with the implementation of revision {args.before} (constrained "
        "layout, zlib level 6; it draws five panels where this one draws six) after one untimed "
        f"draw of each. Medians of the process's CPU seconds (`time.process_time`: other work "
        f"on the shared cores does not count), one run. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, matplotlib "
        f"{matplotlib.__version__}; load {load:.1f} at the start (a shared machine).",
        "", "| model | before (s) | after (s) | after / before | PNG | panels after |",
        "|---|---|---|---|---|---|", *rows, "",
        "Every timed draw: " + "; ".join(notes) + ".",
        "",
        "The report stays inside the version's staging folder (published in the same rename as "
        "the model, never a version without it): drawing after the publish would have saved "
        "this much wall time per job at the price of versions that a crash leaves without "
        "their report. Importing matplotlib and a first draw cost a fresh process another "
        "0.57 s of CPU: the daemon's fork server pays it once before any job (worker.warm_up), "
        "and `train` imports it on a thread while the model trains "
        "(report.warm_up_in_background), off the job's critical path on a second core.",
    ])
    print(text)
    if not args.no_write:
        write_section(HEADING, text)
        print(f"wrote {HEADING!r} in {DOC}")


if __name__ == "__main__":
    main()
