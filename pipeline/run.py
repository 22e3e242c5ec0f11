"""The one entry point: the twelve steps, in order, from a job to a saved model.

This is the only code that trains. The CLI's ``train`` and every daemon worker call
:func:`run_training` unchanged; they differ only in the callback they pass (a terminal bar or
progress files) and in who flips the stop token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import features as feat
from pipeline.checkpoint import CheckpointCallback
from pipeline.dataset import Dataset, SymbolData, build_dataset
from pipeline.device import describe_device, select_device
from pipeline.errors import DataError
from pipeline.evaluate import permutation_importance
from pipeline.events import STEPS, OnEvent, ignore_event
from pipeline.heads import evaluate, get_head, per_class_summary
from pipeline.job import Job
from pipeline.ktrdr_files import version_documents
from pipeline.ktrdr_form import form_for_type, sequence_length
from pipeline.labels import get_source, pair_with_rows
from pipeline.market_data import load_prices
from pipeline.regression_metrics import label_stats
from pipeline.report import (
    REPORT_FILE,
    report_data_from_version,
    warm_up_in_background,
    write_report,
)
from pipeline.sequence import SEQUENCE_TYPES, Windows, window_targets
from pipeline.split_checks import split_class_problems
from pipeline.stop import StopSource, raise_if_stopped
from pipeline.store import ModelStore
from pipeline.trainer import TrainingConfig, seed_everything, train_model
from pipeline.training_keys import describe_line


@dataclass
class RunResult:
    """What a finished run gives back to its caller (and what ``result.json`` reports)."""

    model_path: Path
    metrics: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str]
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)


class StepReporter:
    """Emits numbered ``step``/``substep`` events and times each step."""

    def __init__(self, on_event: OnEvent, stop: StopSource | None) -> None:
        self.on_event, self.stop = on_event, stop
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []  # every warning of the run, the job's own first
        self._current: tuple[str, float] | None = None

    def step(self, number: int, message: str, *, stoppable: bool = True) -> None:
        if stoppable:
            raise_if_stopped(self.stop)
        self.finish()
        name = STEPS[number - 1]
        self._current = (name, time.perf_counter())
        self.on_event({"type": "step", "step": number, "steps": len(STEPS), "name": name,
                       "message": f"{number}. {message}"})

    def sub(self, message: str) -> None:
        self.on_event({"type": "substep", "step": self._step_number(), "message": message})

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.on_event({"type": "warning", "message": message})

    def finish(self) -> None:
        if self._current is not None:
            name, started = self._current
            self.timings[name] = round(time.perf_counter() - started, 6)
            self._current = None

    def _step_number(self) -> int:
        return STEPS.index(self._current[0]) + 1 if self._current else 0


def run_training(
    job: Job,
    *,
    data_root: Path,
    models_root: Path,
    device: str = "auto",
    threads: int = 1,
    job_id: str | None = None,
    on_event: OnEvent | None = None,
    stop: StopSource | None = None,
    resume: dict[str, Any] | None = None,
    checkpoints: CheckpointCallback | None = None,
    before_publish: Callable[[], None] | None = None,
    provenance: dict[str, Any] | None = None,
    strict: bool = False,
) -> RunResult:
    """Train ``job`` and publish the model; raises ``PipelineError`` subclasses on bad input.

    ``resume`` is a state saved earlier by the ``checkpoints`` callback (it decides when:
    :mod:`pipeline.checkpoint`): steps 1-7 are recomputed (they are deterministic) and
    training continues where it stopped.
    ``threads`` is torch's intra-op thread count on CPU. One is the default: these networks are
    small, so a second thread mostly spin-waits (measured 7x slower on a loaded 2-core machine),
    and several daemon slots each get a core. Bit-identical results need the same count.
    ``before_publish`` runs right before the model version is renamed into place; raising
    there publishes nothing (the daemon's fence). ``provenance`` (the daemon's submission and
    attempt) goes into the version's metadata.json, published in the same rename: whoever finds
    the version after a crash knows which attempt of which submission made it.
    ``strict`` (``--strict``) makes the data warnings found while running errors, as it makes
    the job file's: a split with a single class stops the run before training.
    """
    steps = StepReporter(on_event or ignore_event, stop)
    strategy = job.strategy
    for warning in job.warnings:
        steps.warn(warning)
    symbols, timeframes, base_tf = strategy.symbols, strategy.timeframes, strategy.base_timeframe

    # 1. data loading
    steps.step(1, f"Loading market data for {_count(len(symbols), 'symbol')}")
    bars, context = _load_market_data(strategy, data_root, steps)

    # 2. indicators
    steps.step(2, f"Computing {_count(len(strategy.indicators), 'indicator')} "
                  f"on {_count(len(timeframes), 'timeframe')}")
    context_values = feat.compute_context_indicators(strategy, context)
    frames = {symbol: feat.compute_indicator_frames(strategy, bars[symbol], context_values)
              for symbol in symbols}
    steps.sub(", ".join(f"{i}: {spec['type']}" for i, spec in strategy.indicators.items()))

    # 3. fuzzy memberships
    steps.step(3, f"Computing fuzzy memberships for {_count(len(strategy.fuzzy_sets), 'set')}")
    for symbol in symbols:
        feat.add_fuzzy(strategy, frames[symbol])
    for set_id, fuzzy_set in strategy.fuzzy_sets.items():
        names = ", ".join(m["name"] for m in fuzzy_set["memberships"])
        steps.sub(f"{set_id} ({fuzzy_set['indicator']}): {names}")

    # 4. features
    names = feat.resolved_features(strategy)
    steps.step(4, f"Building {_count(len(names), 'feature')}")
    tables = {}
    for symbol in symbols:
        table = feat.feature_table(strategy, frames[symbol])
        tables[symbol], dropped = feat.drop_warmup(table, symbol)
        steps.sub(f"{symbol}: {len(tables[symbol])} rows ({dropped} warm-up rows dropped)")

    # 5. labels: on each symbol's own base-timeframe bars; a feature row is kept when its bar
    # has a label, so bar j's features always carry label j (a CUSUM filter or an unlabelled
    # tail drops both together).
    labels_cfg = strategy.training["labels"]
    source = get_source(labels_cfg["source"])
    classes = source.classes
    steps.step(5, f"Labelling with {source.describe(labels_cfg)}")
    labelled = [_label_symbol(symbol, source, labels_cfg, bars[symbol][base_tf],
                              tables[symbol], steps) for symbol in symbols]

    # 6. dataset
    purge = source.purge_bars(labels_cfg) if source.purge_bars is not None else None
    how = f", purging {purge}-bar label windows" if purge is not None else ""
    steps.step(6, f"Combining symbols and splitting chronologically{how}")
    dataset = _split(strategy, labelled, purge, classes, steps, strict)

    # 7. model creation
    config = TrainingConfig.from_strategy(strategy.training)
    head = get_head(config.output_format)
    outputs = head.width(classes)
    torch_device = select_device(device)
    if torch_device.type == "cpu":
        torch.set_num_threads(threads)
    device_info = describe_device(torch_device)
    steps.step(7, f"Creating the model on {device_info['device']}")
    seed_everything(config.seed)
    model = _build_model(strategy.model, len(names), outputs)
    steps.sub(f"{_describe(strategy.model, len(names), outputs)}, {head.name} head, "
              f"seed {config.seed}")

    # 8. training
    steps.step(8, f"Training model: {config.epochs} epochs, batch {config.batch_size}")
    steps.sub(describe_line(config))
    inputs, targets, weights = model_inputs(dataset, sequence_length(model))
    warming = warm_up_in_background()  # matplotlib loads while the model trains
    if inputs["train"].shape[0] == 0:
        raise DataError(f"no training window of {sequence_length(model)} rows fits in the "
                        "training split; lower model.architecture.sequence_length")
    trained = train_model(model, inputs["train"], targets["train"], inputs["validation"],
                          targets["validation"], config,
                          device=torch_device, on_event=on_event, stop=stop,
                          resume=resume, checkpoints=checkpoints,
                          num_classes=len(classes), sample_weights=weights)
    early = ", stopped early" if trained.stopped_early else ""
    steps.sub(f"best epoch {trained.best_epoch} (val_loss {trained.best_val_loss:.4g}), "
              f"{trained.epochs_run} epochs run{early}")

    # 9. evaluation
    steps.step(9, "Evaluating on the test split")
    test = evaluate(model, inputs["test"], targets["test"], device=torch_device, config=config,
                    classes=classes, threshold=_threshold(strategy.decisions))
    steps.sub(head.summary(test))
    if test.get("per_class"):
        steps.sub(per_class_summary(test))

    # 10. feature importance
    steps.step(10, "Permutation importance on the validation split")
    importance = permutation_importance(model, inputs["validation"],
                                        head.target(targets["validation"]), names,
                                        seed=config.seed, device=torch_device,
                                        score=head.scorer(config))
    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:3]
    steps.sub("top: " + ", ".join(f"{k} {v:+.4g}" for k, v in top))

    # 11. model saving
    steps.step(11, f"Saving the model to {models_root}")
    raise_if_stopped(stop)
    metrics = _metrics(trained, config, test, dataset, targets, classes)
    # Every file in KTRDR's shape with our own keys beside (spec 10.1).
    docs = version_documents(
        strategy=strategy, names=names, normalization=dataset.normalization,
        importance=importance, history=trained.history, test=test, metrics=metrics,
        metadata={"device": device_info["device"], "seed": config.seed, "job_id": job_id,
                  "label_source": source.name, "classes": list(classes),
                  "output_format": head.name, **(provenance or {})},
        created_at=datetime.now(UTC))
    model_path = ModelStore(models_root).save(
        strategy_name=strategy.name, base_timeframe=base_tf, model=model,
        config=docs["config"], metrics=docs["metrics"], features=docs["features"],
        metadata=docs["metadata"], metadata_v3=docs["metadata_v3"],
        before_publish=before_publish,
        extra_files=lambda folder: _draw_report(folder, steps, warming),
    )
    steps.sub(str(model_path))

    # 12. results
    # The version is published: a stop request now would only throw finished work away.
    steps.step(12, "Done", stoppable=False)
    steps.sub(f"test {head.summary(test)}; model {model_path}")
    steps.finish()
    return RunResult(model_path=model_path, metrics=metrics, timings=steps.timings,
                     warnings=list(steps.warnings), device=device_info["device"],
                     history=trained.history)



def _load_market_data(strategy: Any, data_root: Path, steps: StepReporter
                      ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Step 1: every symbol's bars on every timeframe, and the context series."""
    bars: dict[str, dict[str, Any]] = {}
    for symbol in strategy.symbols:
        bars[symbol] = {}
        for tf in strategy.timeframes:
            frame = load_prices(data_root, symbol, tf, strategy.start_date, strategy.end_date)
            if len(frame) < strategy.history_required and tf == strategy.base_timeframe:
                raise DataError(
                    f"{symbol} {tf}: {len(frame)} bars, fewer than training_data.history_required"
                    f" ({strategy.history_required}); widen the date range or lower it")
            bars[symbol][tf] = frame
            steps.sub(f"{symbol} {tf}: {len(frame)} bars, "
                      f"{frame.index[0]:%Y-%m-%d %H:%M} .. {frame.index[-1]:%Y-%m-%d %H:%M}")
    context = feat.load_context_series(strategy, data_root)
    for source_id, series in context.items():
        steps.sub(f"context {source_id}: {len(series.frame)} rows from {series.origin}")
    return bars, context


def _label_symbol(symbol: str, source: Any, labels_cfg: dict, base: Any, table: Any,
                  steps: StepReporter) -> SymbolData:
    """Step 5 for one symbol: its labels on its own base bars, paired with its feature rows."""
    result = source.label(base, labels_cfg)
    keep, labels, weights = pair_with_rows(result, base.index, table.index)
    dropped = "" if keep.all() else f" ({int((~keep).sum())} rows without a label dropped)"
    extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in result.info.items())
    steps.sub(f"{symbol}: {_distribution(labels, source.classes)}{dropped}{extra}")
    return SymbolData(symbol, table[keep], labels, weights)


def _split(strategy: Any, labelled: list[SymbolData], purge: int | None, classes: tuple,
           steps: StepReporter, strict: bool) -> Dataset:
    """Step 6: the symbols combined and split, each split's rows, dates and classes said, and
    a split a classifier cannot learn from warned about (an error under ``strict``)."""
    normalization = {f"{tf}_{spec['raw_indicator']}_raw": spec.get("normalization", "none")
                     for spec in strategy.nn_inputs if "raw_indicator" in spec
                     for tf in spec["timeframes"]}
    dataset = build_dataset(labelled, strategy.training["data_split"], normalization, purge)
    for split in ("train", "validation", "test"):
        span = dataset.spans.get(split, {})
        when = (f"{span['first'][:16]} .. {span['last'][:16]}, ".replace("T", " ")
                if span else "")
        steps.sub(f"{split}: {len(dataset.y[split])} rows, {when}"
                  f"{_distribution(dataset.y[split], classes)}")
    problems = split_class_problems(
        {split: _label_counts(dataset.y[split], classes) for split in dataset.y}
        if classes else {})
    if problems and strict:
        raise DataError("; ".join(problems) + " (an error under --strict)")
    for problem in problems:
        steps.warn(problem)
    if purge is not None:
        purged = sum(r["purged"] for r in dataset.rows.values())
        steps.sub(f"{purged} rows purged or embargoed before the held-out rows")
    if dataset.train_weights is not None:
        steps.sub("training rows drawn by uniqueness weight (with replacement), "
                  f"weights {dataset.train_weights.min():.3f} .. "
                  f"{dataset.train_weights.max():.3f}")
    return dataset


def _metrics(trained: Any, config: TrainingConfig, test: dict[str, Any], dataset: Dataset,
             targets: dict[str, Any], classes: tuple[str, ...]) -> dict[str, Any]:
    """Our metrics.json: the training run, the test metrics, and each split's rows, dates and
    classes (the windows' labels for a sequence model)."""
    splits = ("train", "validation", "test")
    return {
        "training": {"best_epoch": trained.best_epoch, "best_val_loss": trained.best_val_loss,
                     "epochs_run": trained.epochs_run, "stopped_early": trained.stopped_early,
                     "duration": trained.duration,
                     "samples_per_second": trained.samples_per_second,
                     "history": trained.history, "config": config.described()},
        "test": test,
        "rows": dataset.rows,
        "splits": {split: {"rows": int(len(dataset.y[split])), **dataset.spans.get(split, {})}
                   for split in splits},
        "labels": {split: _label_counts(targets[split].numpy(), classes) for split in splits},
    }

def _build_model(arch: dict[str, Any], inputs: int, outputs: int) -> torch.nn.Module:
    """Step 7's network, built by its model type's one builder (the one the store loads with):
    an MLP, or an LSTM/GRU over windows of ``sequence_length`` rows."""
    return form_for_type(arch["type"]).build({**arch, "input_size": inputs,
                                              "num_classes": outputs})


def _describe(arch: dict[str, Any], inputs: int, outputs: int) -> str:
    if arch["type"] in SEQUENCE_TYPES:
        return (f"{arch['type'].upper()} {inputs} x {arch['sequence_length']} bars -> "
                f"{arch['num_layers']} x {arch['hidden_size']} -> {outputs}, "
                f"dropout {arch['dropout']}")
    return (f"MLP {inputs} -> {arch['hidden_layers']} -> {outputs}, {arch['activation']}, "
            f"dropout {arch['dropout']}")


def model_inputs(dataset: Dataset, length: int | None
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """Per split, what the model reads and the target of each input; and the training
    draw weights. An MLP reads rows; a sequence model reads :class:`Windows` of ``length``
    rows inside each symbol's part of each split, targeted (and weighted) by their last row."""
    inputs: dict[str, Any] = {}
    targets: dict[str, torch.Tensor] = {}
    weights = dataset.train_weights
    for split in ("train", "validation", "test"):
        X, y = dataset.X[split], dataset.y[split]
        if length is None:
            inputs[split], targets[split] = torch.from_numpy(X), torch.from_numpy(y)
            continue
        segments = [rows[split] for rows in dataset.rows.values()]
        inputs[split] = Windows.over(torch.from_numpy(X), length, segments)
        targets[split] = torch.from_numpy(window_targets(y, segments, length))
        if split == "train" and weights is not None:
            weights = window_targets(weights, segments, length)
    return inputs, targets, None if weights is None else torch.from_numpy(weights)


def _draw_report(folder: Path, steps: StepReporter, warming: threading.Thread | None) -> None:
    """Draw ``report.png`` into the staged version from its own files, as ``ktrdr-daemon report``
    does. A picture is not worth a trained model: if drawing fails, warn and save without it.

    Drawn here, inside the staging folder, the report is published in the same rename as the
    model: no reader and no crash ever sees a version without it. Drawing it after the publish
    would take its time off the job's wall clock but leave a window (and, after a crash, a
    version) without it; making it cheap was chosen instead (bench/bench_report.py)."""
    if warming is not None:
        warming.join()
    try:
        write_report(report_data_from_version(folder), folder / REPORT_FILE)
    except Exception as exc:
        steps.warn(f"{REPORT_FILE} not drawn ({type(exc).__name__}: {exc}); "
                   "`ktrdr-daemon report` can draw it from the saved files")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _threshold(decisions: dict[str, Any]) -> float | None:
    """Regression's signal threshold: round_trip_cost x min_edge_multiplier (KTRDR's)."""
    cost = decisions.get("cost_model") or {}
    if "round_trip_cost" in cost and "min_edge_multiplier" in cost:
        return float(cost["round_trip_cost"]) * float(cost["min_edge_multiplier"])
    return None


def _label_counts(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Rows per class; for a regression target (no classes) the returns' statistics."""
    if not classes:
        return label_stats(labels)
    counts = np.bincount(labels, minlength=len(classes))
    return {name: int(count) for name, count in zip(classes, counts, strict=True)}


def _distribution(labels: np.ndarray, classes: tuple[str, ...]) -> str:
    if not classes:
        stats = label_stats(labels)
        return (f"{stats['rows']} returns, mean {stats['mean']:+.3g}, std {stats['std']:.3g}, "
                f"{stats['positive']} positive")
    return ", ".join(f"{name} {count}" for name, count in _label_counts(labels, classes).items())
