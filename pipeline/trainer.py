"""Train the MLP: a plain loop over in-memory tensors, one callback, one stop token.

The loop reads in order (shuffle, batches, validation, bookkeeping) and knows nothing about
files or the spool: progress leaves through ``on_event``, checkpoints through ``on_checkpoint``,
and a stop request arrives through ``stop``. Batches are index slices of tensors already on the
device, not a DataLoader: for a small MLP the DataLoader's per-batch Python costs more than the
model itself.

Reproducibility: call :func:`seed_everything` before ``build_mlp`` (weight init uses torch's
global RNG), keep the data, device and thread count, and a CPU run gives the same weights to the
bit. Shuffling uses its own generator seeded by ``config.seed``; dropout uses the global RNG.
Both states travel in every checkpoint, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.checkpoint import Packer, unpack
from pipeline.errors import Cancelled, HandedBack, PipelineError
from pipeline.events import OnEvent
from pipeline.model import NUM_CLASSES
from pipeline.sequence import Windows
from pipeline.stop import StopSource

CHECKPOINT_VERSION = 3  # 3: packed (pipeline.checkpoint) with the values left for to_bytes


def seed_everything(seed: int) -> None:
    """Seed every RNG the pipeline touches; call it before building the model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainingConfig:
    """The strategy's ``training`` section, as the trainer needs it."""

    epochs: int
    batch_size: int
    learning_rate: float
    loss: str = "cross_entropy"
    focal_gamma: float = 2.0
    early_stopping: dict | None = None  # {"patience": int, "min_delta": float}
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise PipelineError(f"training.epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise PipelineError(f"training.batch_size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise PipelineError(f"training.learning_rate must be > 0, got {self.learning_rate}")
        if self.loss not in ("cross_entropy", "focal"):
            raise PipelineError(
                f"training.loss: {self.loss!r} is not supported; allowed: cross_entropy, focal"
            )

    @classmethod
    def from_strategy(cls, training: Mapping[str, Any]) -> TrainingConfig:
        """Read the strategy's ``training`` mapping, applying the spec's defaults."""
        stopping = training.get("early_stopping")
        if stopping is not None:
            stopping = {
                "patience": int(stopping.get("patience", 10)),
                "min_delta": float(stopping.get("min_delta", 0.0)),
            }
        seed = training.get("seed")
        return cls(
            epochs=int(training.get("epochs", 100)),
            batch_size=int(training.get("batch_size", 32)),
            learning_rate=float(training.get("learning_rate", 0.001)),
            loss=str(training.get("loss", "cross_entropy")),
            focal_gamma=float(training.get("focal_gamma", 2.0)),
            early_stopping=stopping,
            seed=0 if seed is None else int(seed),
        )


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


def class_weights(y: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """Inverse-frequency weights ``w_c = (1/n_c) / sum(1/n) * C``; a class absent from ``y``
    gets 0 (it cannot be predicted wrongly in training, and 1/0 must not poison the sum)."""
    counts = torch.bincount(y.detach().long().cpu(), minlength=num_classes)[:num_classes].double()
    inverse = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    total = inverse.sum()
    if total == 0:
        return torch.zeros(num_classes, dtype=torch.float32)
    return (inverse / total * num_classes).float()


def focal_loss(logits: Tensor, target: Tensor, alpha: Tensor, gamma: float) -> Tensor:
    """Mean of ``alpha_y * (1 - p_y)^gamma * -log p_y``: easy examples count less."""
    ce = F.cross_entropy(logits, target, reduction="none")
    p_true = torch.exp(-ce)
    return (alpha[target] * (1.0 - p_true).pow(gamma) * ce).mean()


def _criterion(config: TrainingConfig, weights: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    if config.loss == "focal":
        gamma = config.focal_gamma
        return lambda logits, target: focal_loss(logits, target, weights, gamma)
    return nn.CrossEntropyLoss(weight=weights)


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
    on_checkpoint: Callable[[dict], None] | None = None,
    batch_event_interval: float = 0.1,
    num_classes: int = NUM_CLASSES,
    sample_weights: Tensor | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave it holding the best validation epoch's weights.

    Between batches ``stop.reason()`` is asked: "cancel" raises :class:`Cancelled` at once;
    "handback" first passes the state at this batch to ``on_checkpoint``, then raises
    :class:`HandedBack`. ``on_checkpoint`` also gets the state after every epoch. A state holds
    only tensors and plain values (:func:`pipeline.checkpoint.to_bytes` writes it; nothing is
    unpickled reading it back), and ``resume=state`` continues the run bit for bit.
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
    y_train = torch.as_tensor(y_train).long().to(device)
    X_val = _inputs_on(X_val, device)
    y_val = torch.as_tensor(y_val).long().to(device)
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

    criterion = _criterion(config, class_weights(y_train, num_classes).to(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)  # CPU: same shuffle on any device
    batch_size = config.batch_size
    batches = math.ceil(n_train / batch_size)
    stopping = config.early_stopping

    p = _Progress()
    if resume is not None:
        p = _restore(resume, model, optimizer, generator, device)

    history_json: list[str] = []  # each epoch's record encoded once, not once per checkpoint
    packer = Packer()  # keeps the flat views of the tensors below from one epoch to the next
    live_model = model.state_dict(keep_vars=True)  # the parameters themselves, not copies

    def checkpoint() -> dict:
        history_json.extend(json.dumps(h) for h in p.history[len(history_json):])
        tensors, optimizer_state = _state_tensors(live_model, optimizer, p.best_model)
        tensors["generator"] = generator.get_state()
        tensors["torch_rng"] = torch.get_rng_state()
        device_rng = _device_rng_state(device)
        if device_rng is not None:
            tensors["device_rng"] = device_rng
        if p.permutation is not None:
            tensors["permutation"] = p.permutation
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": p.epoch,
            "batch": p.batch,
            "history": "[" + ",".join(history_json) + "]",
            # The rest in a few flat tensors and one JSON text (pipeline.checkpoint): this
            # runs every epoch, on the training thread.
            "state": packer.pack(tensors, {
                "optimizer": optimizer_state,
                "best": p.best_model is not None,
                "device_type": device.type,
                "loss_sum": p.loss_sum,
                "correct": p.correct,
                "seen": p.seen,
                "best_epoch": p.best_epoch,
                "best_val_loss": p.best_val_loss,
                "patience_counter": p.patience_counter,
                "patience_best": p.patience_best,
                "stopped_early": p.stopped_early,
                "train_seconds": p.train_seconds + (time.monotonic() - started),
                "samples_seen": p.samples_seen,
            }),
        }

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
        model.train()
        for b in range(p.batch, batches):
            if stop is not None and (why := stop.reason()) is not None:
                if why == "cancel":
                    raise Cancelled("cancelled on request")
                p.batch, p.loss_sum, p.correct = b, loss_sum.item(), int(correct.item())
                if on_checkpoint is not None:
                    on_checkpoint(checkpoint())
                raise HandedBack("handed back on request")
            index = order[b * batch_size : (b + 1) * batch_size]
            xb, yb = X_train[index], y_train[index]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = criterion(logits, yb)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            loss_sum.add_(loss.detach(), alpha=len(yb))
            correct.add_((logits.argmax(1) == yb).sum())
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

        val_loss, val_accuracy = _validate(model, X_val, y_val, criterion)
        train_loss = p.loss_sum / max(p.seen, 1)
        if len(X_val) == 0:  # nothing to validate on: judge epochs by the training loss
            val_loss = train_loss
        if val_loss < p.best_val_loss:
            p.best_val_loss, p.best_epoch = val_loss, p.epoch + 1
            if p.best_model is None:
                p.best_model = {k: v.detach().clone() for k, v in live_model.items()}
            else:  # into the same tensors: the checkpoint packer keeps its views of them
                with torch.no_grad():
                    for key, value in live_model.items():
                        p.best_model[key].copy_(value)
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
            "train_accuracy": p.correct / max(p.seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "duration": time.monotonic() - epoch_started,
        }
        p.history.append(record)
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
        if on_checkpoint is not None:
            on_checkpoint(checkpoint())

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
    model: nn.Module, X: Tensor | Windows, y: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]
) -> tuple[float, float]:
    """One forward pass in eval mode (no dropout, so no RNG is consumed): (loss, accuracy).

    The loss is the training criterion, so early stopping watches what training minimises.
    """
    if len(X) == 0:
        return math.nan, math.nan
    model.eval()
    logits = model(X if isinstance(X, Tensor) else X[:])
    loss = float(criterion(logits, y).item())
    accuracy = float((logits.argmax(1) == y).float().mean().item())
    model.train()
    return loss, accuracy


def _restore(
    state: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
) -> _Progress:
    """Put model, optimizer and every RNG back as the checkpoint left them."""
    if state.get("version") != CHECKPOINT_VERSION:
        raise PipelineError(
            f"checkpoint version {state.get('version')!r} is not supported "
            f"(expected {CHECKPOINT_VERSION}); start the job afresh"
        )
    tensors, values = unpack(state["state"])
    model_state, optimizer_state, best = _split_tensors(tensors, values)
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    generator.set_state(tensors["generator"])
    torch.set_rng_state(tensors["torch_rng"])
    if values["device_type"] == device.type:  # another kind of device has another RNG
        _set_device_rng_state(device, tensors.get("device_rng"))
    return _Progress(
        epoch=int(state["epoch"]),
        batch=int(state["batch"]),
        permutation=tensors.get("permutation"),
        loss_sum=float(values["loss_sum"]),
        correct=int(values["correct"]),
        seen=int(values["seen"]),
        best_model=None if best is None else {k: v.to(device) for k, v in best.items()},
        best_epoch=int(values["best_epoch"]),
        best_val_loss=float(values["best_val_loss"]),
        patience_counter=int(values["patience_counter"]),
        patience_best=float(values["patience_best"]),
        stopped_early=bool(values["stopped_early"]),
        history=json.loads(state["history"]),
        train_seconds=float(values["train_seconds"]),
        samples_seen=int(values["samples_seen"]),
    )


# A checkpoint's tensors by name: "model/<key>", "best/<key>", "optimizer/<index>/<key>".
def _state_tensors(model_state: Mapping[str, Tensor], optimizer: torch.optim.Optimizer,
                   best: Mapping[str, Tensor] | None) -> tuple[dict[str, Tensor], dict]:
    """The model's, the optimizer's and the best weights' tensors by name, and the optimizer's
    state dict with its tensors left out (its plain values and parameter groups)."""
    tensors = {f"model/{key}": value for key, value in model_state.items()}
    saved = optimizer.state_dict()
    plain: dict[int, dict[str, Any]] = {}
    for index, per_parameter in saved["state"].items():
        plain[index] = {}
        for key, value in per_parameter.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                plain[index][key] = value
    if best is not None:
        tensors.update({f"best/{key}": value for key, value in best.items()})
    return tensors, {"state": plain, "param_groups": saved["param_groups"]}


def _split_tensors(tensors: Mapping[str, Tensor], values: Mapping[str, Any]
                   ) -> tuple[dict[str, Tensor], dict, dict[str, Tensor] | None]:
    """The model's state dict, the optimizer's and the best weights (None before the first
    epoch ended), put back together from :func:`_state_tensors`' names."""
    model_state: dict[str, Tensor] = {}
    best: dict[str, Tensor] = {}
    # A copy: the values may be a live checkpoint's own (resumed in memory, not from a file).
    optimizer_state = {"state": {index: dict(plain)
                                 for index, plain in values["optimizer"]["state"].items()},
                       "param_groups": values["optimizer"]["param_groups"]}
    for name, tensor in tensors.items():
        kind, _, key = name.partition("/")
        if kind == "model":
            model_state[key] = tensor
        elif kind == "best":
            best[key] = tensor
        elif kind == "optimizer":
            index, _, field = key.partition("/")
            optimizer_state["state"][int(index)][field] = tensor
    return model_state, optimizer_state, best if values["best"] else None
