"""Benchmark: ``train_model`` against the smallest honest hand-written loop (goal >= 0.9x).

Run with ``python -m bench.bench_trainer``. Same tensors, same model and optimizer settings, in
the same process, alternating the two in every repeat so drift hits both alike. The minimal loop
is randperm + slice + forward + loss + backward + clip + step and nothing else; ``train_model``
adds what the pipeline needs (running loss/accuracy, stop checks, rate-limited events, a
validation pass per epoch on 1,000 rows, best-weight copies). Writes its own section of
``docs/benchmarks.md``, replacing an older run of this benchmark and nothing else.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch
from torch import nn

from bench.docs import DOC, write_section
from pipeline.events import Event
from pipeline.model import build_mlp
from pipeline.stop import StopToken
from pipeline.trainer import TrainingConfig, class_weights, seed_everything, train_model

ROWS, FEATURES, HIDDEN, VAL_ROWS = 20_000, 30, [64, 32], 1_000
EPOCHS = {32: 1, 256: 3, 2048: 12}  # about the same work per run at each batch size
REPEATS = 7
GOAL = 0.9
HEADING = "## Trainer throughput"


def minimal_loop(model: nn.Module, X, y, epochs: int, batch_size: int) -> None:
    """The baseline: what anyone would write by hand for this model."""
    criterion = nn.CrossEntropyLoss(weight=class_weights(y))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(X[index]), y[index])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()


def _ignore(event: Event) -> None:
    pass


def measure(batch_size: int, data) -> tuple[float, float]:
    """Best samples/s of (minimal loop, train_model) over interleaved repeats.

    The best run is the one least disturbed by other work on the machine, so it measures the
    code rather than the neighbours; medians are printed alongside for honesty.
    """
    X, y, Xv, yv = data
    epochs = EPOCHS[batch_size]
    config = TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=1e-3)
    cpu = torch.device("cpu")
    rates: dict[str, list[float]] = {"minimal": [], "trainer": []}
    for repeat in range(REPEATS + 1):  # repeat 0 warms up this batch shape and is not kept
        for name in ("minimal", "trainer"):
            seed_everything(0)
            model = build_mlp(FEATURES, HIDDEN, 0.2, "relu")
            start = time.perf_counter()
            if name == "minimal":
                minimal_loop(model, X, y, epochs, batch_size)
            else:
                train_model(
                    model, X, y, Xv, yv, config, device=cpu, on_event=_ignore, stop=StopToken()
                )
            if repeat > 0:
                rates[name].append(len(X) * epochs / (time.perf_counter() - start))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"  batch {batch_size}: medians {medians['minimal']:,.0f} vs {medians['trainer']:,.0f}"
        f" ({medians['trainer'] / medians['minimal']:.2f}x)",
        flush=True,
    )
    return max(rates["minimal"]), max(rates["trainer"])


def main() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(ROWS, FEATURES, generator=g)
    y = torch.randint(0, 3, (ROWS,), generator=g)
    Xv = torch.randn(VAL_ROWS, FEATURES, generator=g)
    yv = torch.randint(0, 3, (VAL_ROWS,), generator=g)
    rows = []
    for batch_size in EPOCHS:
        base, ours = measure(batch_size, (X, y, Xv, yv))
        ratio = ours / base
        rows.append(
            f"| {batch_size} | {EPOCHS[batch_size]} | {base:,.0f} | {ours:,.0f} | "
            f"{ratio:.2f}x | {'yes' if ratio >= GOAL else 'NO'} |"
        )
        print(rows[-1], flush=True)
    section = "\n".join(
        [
            HEADING,
            "",
            f"`python -m bench.bench_trainer`: {ROWS:,} x {FEATURES} random features, MLP "
            f"{HIDDEN} (relu, dropout 0.2), CPU, {torch.get_num_threads()} torch threads. "
            f"Best samples/s of {REPEATS} interleaved repeats (after one warm-up each) of a "
            "minimal hand-written loop "
            "(randperm + slice + forward + loss + backward + clip + step) and of `train_model` "
            f"(which also validates on {VAL_ROWS:,} rows each epoch, checks a stop token per "
            f"batch and emits events). Goal: ratio >= {GOAL}.",
            f"Machine: {platform.machine()}, Python {platform.python_version()}, "
            f"torch {torch.__version__}.",
            "",
            "| batch | epochs | minimal loop (samples/s) | train_model (samples/s) | ratio "
            "| goal met |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_section(HEADING, section)
    print(f"wrote {HEADING!r} in {DOC}")


if __name__ == "__main__":
    main()
