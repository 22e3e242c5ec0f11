"""Train the model: a plain loop over in-memory tensors, one callback, one stop token.

The loop reads in order (shuffle, batches, validation, bookkeeping) and knows nothing about
files or the spool: progress leaves through ``on_event``, checkpoints through the ``checkpoints``
callback (:mod:`pipeline.checkpoint`: it decides when), and a stop request arrives through
``stop``. Batches are index slices of tensors already on the
device, not a DataLoader: for a small MLP the DataLoader's per-batch Python costs more than the
model itself.

Reproducibility: call :func:`seed_everything` before ``build_mlp`` (weight init uses torch's
global RNG), keep the data, device and thread count, and a CPU run gives the same weights to the
bit. Shuffling uses its own generator seeded by ``config.seed``; dropout uses the global RNG.
Both states travel in every checkpoint, so a resumed run continues exactly where it stopped,
at whichever batch the checkpoint was taken; so do the optimizer's and the learning-rate
scheduler's states.

What the loss, the per-epoch hit rate and the targets' dtype are comes from the output head
(:mod:`pipeline.heads`); the optimizer, scheduler and clipping from the config
(:mod:`pipeline.optimization`, :mod:`pipeline.training_keys`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.checkpoint import CheckpointCallback
from pipeline.errors import Cancelled, HandedBack, PipelineError
from pipeline.events import OnEvent
from pipeline.heads import Head, get_head
from pipeline.losses import class_weights, focal_loss
from pipeline.model import NUM_CLASSES
from pipeline.optimization import Scheduler, build_optimizer, build_scheduler, step_scheduler
from pipeline.sequence import Windows
from pipeline.stop import StopSource
from pipeline.training_keys import TrainingConfig

__all__ = ["CHECKPOINT_VERSION", "TrainResult", "TrainingConfig", "class_weights", "focal_loss",
           "seed_everything", "train_model"]

# 4: plain state dicts for torch.save (3: a hand-written packed format; 2 and 1: torch.save of
# packed and of nested states)
CHECKPOINT_VERSION = 4


def seed_everything(seed: int) -> None:
    """Seed every RNG the pipeline touches; call it before building the model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    """What training did. ``best_epoch`` is 1-based; the model holds that epoch's weights.

    ``duration`` and ``samples_per_second`` add up across resumed attempts.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    epochs_run: int = 0
    stopped_early: bool = False
    duration: float = 0.0
    samples_per_second: float = 0.0


def _device_rng_state(device: torch.device) -> Tensor | None:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def _set_device_rng_state(device: torch.device, state: Tensor | None) -> None:
    if state is None:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)


@dataclass
class _Progress:
    """Everything that changes during training; exactly what a checkpoint saves."""

    epoch: int = 0  # 0-based index of the current (or next) epoch
    batch: int = 0  # next batch index within the epoch
    permutation: Tensor | None = None  # this epoch's shuffle, None before it is drawn
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    best_model: dict[str, Tensor] | None = None
    best_epoch: int = 0
    best_val_loss: float = math.inf
    patience_counter: int = 0
    patience_best: float = math.inf
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_seen: int = 0


def train_model(
    model: nn.Module,
    X_train: Tensor | Windows,
    y_train: Tensor,
    X_val: Tensor | Windows,
    y_val: Tensor,
    config: TrainingConfig,
    *,
    device: torch.device,
    on_event: OnEvent | None = None,
    stop: StopSource | None = None,
    resume: dict | None = None,
    checkpoints: CheckpointCallback | None = None,
    batch_event_interval: float = 0.1,
    num_classes: int = NUM_CLASSES,
    sample_weights: Tensor | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave it holding the best validation epoch's weights.

    Between batches ``stop.reason()`` is asked: "cancel" raises :class:`Cancelled` at once;
    "handback" first offers the state at this batch to ``checkpoints.on_handback``, then raises
    :class:`HandedBack`. ``checkpoints`` is also offered the state after every batch and at the
    end of training (:mod:`pipeline.checkpoint`). A state holds only CPU tensors and plain
    values (``torch.save`` writes it, ``torch.load(weights_only=True)`` reads it), and
    ``resume=state`` continues the run bit for bit.
    ``num_classes`` sizes the class weights (a class absent from training weighs 0).
    ``sample_weights`` (one per training row) turn each epoch's shuffle into a draw of as many
    rows with replacement, in proportion to the weights (torch's WeightedRandomSampler).
    For a sequence model the inputs are :class:`pipeline.sequence.Windows`: a "row" is then a
    window (labels and weights are the windows' own), shuffled and batched exactly like rows,
    each batch gathered from the strided view on the device.
    """
    started = time.monotonic()
    device = torch.device(device)
    model.to(device)
    X_train = _inputs_on(X_train, device)
    head = get_head(config.output_format)
    y_train = head.target(torch.as_tensor(y_train)).to(device)
    X_val = _inputs_on(X_val, device)
    y_val = head.target(torch.as_tensor(y_val)).to(device)
    n_train = len(X_train)
    if n_train == 0:
        raise PipelineError("the training split is empty: there is nothing to train on")
    draw = None
    if sample_weights is not None:
        draw = torch.as_tensor(sample_weights, dtype=torch.float64).cpu()
        if (draw.shape != (n_train,) or not bool(torch.isfinite(draw).all())
                or bool((draw < 0).any()) or draw.sum() <= 0):
            raise PipelineError("sample weights must be one finite non-negative number per "
                                "training row, not all zero")

    criterion = head.criterion(config, y_train, num_classes)
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer)
    clip = config.gradient_clip
    generator = torch.Generator().manual_seed(config.seed)  # CPU: same shuffle on any device
    batch_size = config.batch_size
    batches = math.ceil(n_train / batch_size)
    stopping = config.early_stopping

    p = _Progress()
    if resume is not None:
        p = _restore(resume, model, optimizer, generator, device, scheduler)

    def state() -> dict:
        """A copy of everything training changes, as it stands in ``p`` (a Snapshot)."""
        return _checkpoint(p, model, optimizer, scheduler, generator, device,
                           p.train_seconds + (time.monotonic() - started))

    # A batch event at most every batch_event_interval, counted from any event: an epoch's
    # event stands for its last batch, and short epochs send no batch events at all.
    last_event = -math.inf
    while p.epoch < config.epochs and not p.stopped_early:
        epoch_started = time.monotonic()
        if p.permutation is None:
            p.permutation = (torch.randperm(n_train, generator=generator) if draw is None else
                             torch.multinomial(draw, n_train, True, generator=generator))
            p.batch, p.loss_sum, p.correct, p.seen = 0, 0.0, 0, 0
        order = p.permutation.to(device)
        # Running sums stay on the device so a batch never waits for the GPU.
        loss_sum = torch.tensor(p.loss_sum, dtype=torch.float32, device=device)
        correct = torch.tensor(p.correct, dtype=torch.int64, device=device)

        def at_batch() -> dict:
            """The state before batch ``b``; the sums are read (a GPU sync) only when due.
            Called within the iteration that defines it, so the loop's variables are its."""
            p.batch, p.loss_sum, p.correct = b, loss_sum.item(), int(correct.item())  # noqa: B023
            return state()

        model.train()
        first = p.batch
        for b in range(first, batches):
            if checkpoints is not None and b > first:  # after batch b - 1
                checkpoints.on_batch_end(at_batch)
            if stop is not None and (why := stop.reason()) is not None:
                if why == "cancel":
                    raise Cancelled("cancelled on request")
                if checkpoints is not None:
                    checkpoints.on_handback(at_batch)
                raise HandedBack("handed back on request")
            index = order[b * batch_size : (b + 1) * batch_size]
            xb, yb = X_train[index], y_train[index]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = criterion(logits, yb)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            loss_sum.add_(loss.detach(), alpha=len(yb))
            correct.add_(head.hits(logits, yb))
            p.seen += len(yb)
            p.samples_seen += len(yb)
            if on_event is not None:
                now = time.monotonic()
                if now - last_event >= batch_event_interval:
                    last_event = now
                    on_event(
                        {
                            "type": "batch",
                            "epoch": p.epoch + 1,
                            "epochs": config.epochs,
                            "batch": b + 1,
                            "batches": batches,
                        }
                    )
        p.batch, p.loss_sum, p.correct = batches, loss_sum.item(), int(correct.item())

        val_loss, val_hits, val_extra = _validate(model, X_val, y_val, criterion, head)
        train_loss = p.loss_sum / max(p.seen, 1)
        if len(X_val) == 0:  # nothing to validate on: judge epochs by the training loss
            val_loss = train_loss
        if val_loss < p.best_val_loss:
            p.best_val_loss, p.best_epoch = val_loss, p.epoch + 1
            p.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stopping is not None:
            # Patience counts epochs without a gain of more than min_delta over the best
            # *significant* val_loss (Keras and Lightning semantics).
            if val_loss < p.patience_best - stopping["min_delta"]:
                p.patience_best, p.patience_counter = val_loss, 0
            else:
                p.patience_counter += 1
        record = {
            "epoch": p.epoch + 1,
            "train_loss": train_loss,
            f"train_{head.hit}": p.correct / max(p.seen, 1),
            "val_loss": val_loss,
            f"val_{head.hit}": val_hits,
            **val_extra,
            "learning_rate": optimizer.param_groups[0]["lr"],  # the rate this epoch used
            "duration": time.monotonic() - epoch_started,
        }
        p.history.append(record)
        step_scheduler(scheduler, val_loss)
        if on_event is not None:
            last_event = time.monotonic()
            on_event(
                {
                    "type": "epoch",
                    **record,
                    "epochs": config.epochs,
                    "best_epoch": p.best_epoch,
                    "best_val_loss": p.best_val_loss,
                }
            )
        p.epoch, p.batch, p.permutation = p.epoch + 1, 0, None
        if stopping is not None and p.patience_counter >= stopping["patience"]:
            p.stopped_early = p.epoch < config.epochs
        if checkpoints is not None and p.epoch < config.epochs and not p.stopped_early:
            checkpoints.on_batch_end(state)  # the epoch's last batch (the end comes below)

    if checkpoints is not None:
        checkpoints.on_train_end(state)
    if p.best_model is not None:
        model.load_state_dict(p.best_model)
    duration = p.train_seconds + (time.monotonic() - started)
    return TrainResult(
        history=p.history,
        best_epoch=p.best_epoch,
        best_val_loss=p.best_val_loss,
        epochs_run=len(p.history),
        stopped_early=p.stopped_early,
        duration=duration,
        samples_per_second=p.samples_seen / duration if duration > 0 else 0.0,
    )


def _inputs_on(X: Any, device: torch.device) -> Tensor | Windows:
    """Rows as a float32 tensor on ``device``; sequence windows keep their view form (their
    feature matrix moves once) so that a batch ``X[index]`` gathers windows on the device."""
    if isinstance(X, Windows):
        return X.to(device)
    return torch.as_tensor(X, dtype=torch.float32).to(device)


@torch.no_grad()
def _validate(
    model: nn.Module, X: Tensor | Windows, y: Tensor,
    criterion: Callable[[Tensor, Tensor], Tensor], head: Head,
) -> tuple[float, float, dict[str, float]]:
    """One forward pass in eval mode (no dropout, so no RNG is consumed): (loss, hit rate, the
    head's other metrics). The loss is the training criterion, so early stopping and the
    best epoch follow what training minimises."""
    if len(X) == 0:
        return math.nan, math.nan, {}
    model.eval()
    logits = model(X if isinstance(X, Tensor) else X[:])
    loss = float(criterion(logits, y).item())
    hits = float(head.hits(logits, y).item()) / len(y)
    extra = head.val_extra(logits, y)
    model.train()
    return loss, hits, extra


def _checkpoint(p: _Progress, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Scheduler | None, generator: torch.Generator, device: torch.device,
                train_seconds: float) -> dict:
    """The state that :func:`_restore` puts back: a copy on the CPU (training goes on changing
    the live tensors), in plain dicts, lists and values (``torch.load(weights_only=True)``)."""
    saved = optimizer.state_dict()  # new dicts, but the live tensors
    return {
        "version": CHECKPOINT_VERSION,
        "epoch": p.epoch,
        "batch": p.batch,
        "model": _cpu_copy(model.state_dict()),
        "optimizer": {"state": {index: _cpu_copy(values)
                                for index, values in saved["state"].items()},
                      "param_groups": saved["param_groups"]},
        "best_model": None if p.best_model is None else _cpu_copy(p.best_model),
        # plain numbers and lists (a scheduler's state holds no tensor)
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "permutation": p.permutation,  # drawn once an epoch, never changed in place
        "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state(),
                "device": _device_rng_state(device), "device_type": device.type},
        "progress": {"loss_sum": p.loss_sum, "correct": p.correct, "seen": p.seen,
                     "best_epoch": p.best_epoch, "best_val_loss": p.best_val_loss,
                     "patience_counter": p.patience_counter, "patience_best": p.patience_best,
                     "stopped_early": p.stopped_early, "train_seconds": train_seconds,
                     "samples_seen": p.samples_seen},
        "history": list(p.history),  # each record is never changed once appended
    }


def _cpu_copy(values: Mapping[Any, Any]) -> dict[Any, Any]:
    return {key: value.detach().to("cpu", copy=True) if isinstance(value, Tensor) else value
            for key, value in values.items()}


_PROGRESS_TYPES = {"loss_sum": float, "correct": int, "seen": int, "best_epoch": int,
                   "best_val_loss": float, "patience_counter": int, "patience_best": float,
                   "stopped_early": bool, "train_seconds": float, "samples_seen": int}


def check_checkpoint(state: Any) -> None:
    """Raise ``ValueError`` unless ``state`` has the shape :func:`_checkpoint` gives, this
    version's: a file read back safely may still be another version's, or forged. (Whether its
    tensors fit the model is for ``load_state_dict`` to say.)"""
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        version = state.get("version") if isinstance(state, dict) else None
        raise ValueError(f"format version {version!r}, this version reads {CHECKPOINT_VERSION}")
    rng, progress, optimizer = state.get("rng"), state.get("progress"), state.get("optimizer")
    checks = {
        "epoch and batch": all(type(state.get(k)) is int and state[k] >= 0
                               for k in ("epoch", "batch")),
        "model": _is_tensors(state.get("model")),
        "best_model": state.get("best_model") is None or _is_tensors(state["best_model"]),
        "scheduler": state.get("scheduler") is None or isinstance(state["scheduler"], dict),
        "permutation": state.get("permutation") is None
        or isinstance(state["permutation"], Tensor),
        "optimizer": isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
        and isinstance(optimizer.get("param_groups"), list),
        "rng": isinstance(rng, dict) and isinstance(rng.get("generator"), Tensor)
        and isinstance(rng.get("torch"), Tensor) and isinstance(rng.get("device_type"), str)
        and (rng.get("device") is None or isinstance(rng["device"], Tensor)),
        "progress": isinstance(progress, dict) and all(
            isinstance(progress.get(k), kind) for k, kind in _PROGRESS_TYPES.items()),
        "history": isinstance(state.get("history"), list)
        and all(isinstance(h, dict) for h in state["history"]),
    }
    wrong = [name for name, ok in checks.items() if not ok]
    if wrong:
        raise ValueError(f"not a training state: {', '.join(wrong)} missing or malformed")


def _is_tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def _restore(
    state: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
    scheduler: Scheduler | None = None,
) -> _Progress:
    """Put model, optimizer, scheduler and every RNG back as the checkpoint left them."""
    try:
        check_checkpoint(state)
    except ValueError as exc:
        raise PipelineError(f"cannot resume from this checkpoint: {exc}; start the job afresh"
                            ) from None
    model.load_state_dict(state["model"])  # copies into the parameters
    # The optimizer would keep the tensors it is given: copies, so training never changes a
    # state that the caller holds (resumed in memory, not from a file).
    saved = state["optimizer"]
    optimizer.load_state_dict({"param_groups": saved["param_groups"], "state": {
        index: _cpu_copy(values) for index, values in saved["state"].items()}})
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng, values = state["rng"], state["progress"]
    generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    if rng["device_type"] == device.type:  # another kind of device has another RNG
        _set_device_rng_state(device, rng["device"])
    best = state["best_model"]
    return _Progress(
        epoch=state["epoch"],
        batch=state["batch"],
        permutation=state["permutation"],
        best_model=None if best is None else {k: v.to(device) for k, v in best.items()},
        history=list(state["history"]),
        **{key: values[key] for key in _PROGRESS_TYPES},
    )
