"""``python -m bench`` (``make bench``): every benchmark in turn; each rewrites its own section
of docs/benchmarks.md. Run them on a quiet machine: they compare against baselines measured in
the same run, but a loaded machine still widens every spread."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("bench.bench_features", "bench.bench_indicators", "bench.bench_labels",
              "bench.bench_trainer", "bench.bench_train", "bench.bench_daemon",
              "bench.bench_overhead", "bench.bench_schema", "bench.bench_cli",
              "bench.bench_report")

if __name__ == "__main__":
    chosen = sys.argv[1:] or BENCHMARKS
    for name in chosen:
        print(f"== {name}", flush=True)
        sys.argv = [name]  # each benchmark parses its own options: give it none
        importlib.import_module(name if name.startswith("bench.") else f"bench.{name}").main()
