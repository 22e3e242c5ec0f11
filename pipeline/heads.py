"""Output heads: what the network's last layer means, one entry per ``decisions.output_format``.

A head says how wide the last layer is, which loss trains it, what a "hit" is in the per-epoch
progress, how the test split is judged and how a test result reads in one line. The trainer,
evaluation, feature importance and the run's log ask the head and never test the format
themselves, so :mod:`pipeline.run` still reads as the twelve steps.

- classification: one logit per class of the label source (3 or 4); class-weighted
  cross-entropy or focal loss; accuracy, precision/recall/F1, the confusion matrix.
- regression: one output, a forward return; Huber (``huber_delta``) or MSE, no class weights;
  directional accuracy per epoch (``pred > 0`` against ``y > 0``, KTRDR's training rule) and
  :mod:`pipeline.regression_metrics` on the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.evaluate import _logits, evaluate_model
from pipeline.losses import class_weights, focal_loss, regression_loss
from pipeline.regression_metrics import regression_metrics
from pipeline.training_keys import TrainingConfig

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Head:
    """One output format. ``hit`` names the per-epoch hit rate (``train_<hit>``,
    ``val_<hit>``); ``scorer`` is the unweighted loss permutation importance watches."""

    name: str
    hit: str
    width: Callable[[Sequence[str]], int]  # label classes -> outputs
    target: Callable[[Tensor], Tensor]  # labels as the loss wants them
    criterion: Callable[[TrainingConfig, Tensor, int], LossFn]  # config, y_train, outputs
    hits: Callable[[Tensor, Tensor], Tensor]  # batch outputs, targets -> hit count
    val_extra: Callable[[Tensor, Tensor], dict[str, float]]  # more per-epoch val metrics
    scorer: Callable[[TrainingConfig], LossFn]
    summary: Callable[[dict[str, Any]], str]  # a test result in one line
    # The test split's metrics: (model, X, y, device, config, classes, threshold) -> dict.
    test_metrics: Callable[..., dict[str, Any]]


def _classification_criterion(config: TrainingConfig, y_train: Tensor, outputs: int) -> LossFn:
    weights = class_weights(y_train, outputs).to(y_train.device)
    if config.loss == "focal":
        gamma = config.focal_gamma
        return lambda logits, target: focal_loss(logits, target, weights, gamma)
    return nn.CrossEntropyLoss(weight=weights)


def _regression_criterion(config: TrainingConfig, y_train: Tensor, outputs: int) -> LossFn:
    loss, delta = str(config.loss), config.huber_delta
    return lambda pred, target: regression_loss(pred, target, loss, delta)


def _direction_hits(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred.reshape(-1) > 0) == (target > 0)).sum()


def _classification_summary(test: dict[str, Any]) -> str:
    line = f"accuracy {test['test_accuracy']:.3f}"
    if test.get("baseline_class") is not None:  # versions saved before it have none
        line += (f" (majority-class baseline {test['baseline_accuracy']:.3f}: always "
                 f"{test['baseline_class']})")
    return line + f", loss {test['test_loss']:.4f}, f1 {test['f1']:.3f}"


def per_class_summary(test: dict[str, Any]) -> str:
    """Each class's precision, recall and F1 in one line: the weighted F1 hides a class the
    model never predicts (recall 0), this line does not."""
    return "; ".join(
        f"{name} precision {c['precision']:.2f} recall {c['recall']:.2f} f1 {c['f1']:.2f} "
        f"({c['support']} rows)" for name, c in (test.get("per_class") or {}).items())


def _regression_summary(test: dict[str, Any]) -> str:
    line = (f"{test['loss']} loss {test['test_loss']:.4g}, mae {test['mae']:.4g}, "
            f"rmse {test['rmse']:.4g}, direction {test['directional_accuracy']:.3f}")
    if "baseline_direction" in test:
        line += f" (baseline {test['baseline_direction']:.3f})"
    line += f", IC {test['spearman_ic']:+.3f}"
    if "signal_counts" in test:
        counts = test["signal_counts"]
        line += (f"; threshold {test['threshold']:g}: "
                 + " ".join(f"{k} {counts[k]}" for k in ("BUY", "HOLD", "SELL")))
    return line


def _classification_test(model: nn.Module, X: Any, y: Any, device: torch.device,
                         config: TrainingConfig, classes: Sequence[str],
                         threshold: float | None) -> dict[str, Any]:
    return evaluate_model(model, X, y, device=device, class_names=classes)


def _regression_test(model: nn.Module, X: Any, y: Any, device: torch.device,
                     config: TrainingConfig, classes: Sequence[str],
                     threshold: float | None) -> dict[str, Any]:
    pred = _logits(model, X, torch.device(device), 1).reshape(-1).numpy()
    return regression_metrics(pred, torch.as_tensor(y).double().numpy(), loss=str(config.loss),
                              huber_delta=config.huber_delta, threshold=threshold)


HEADS: dict[str, Head] = {
    "classification": Head(
        name="classification",
        hit="accuracy",
        width=len,
        target=lambda y: y.long(),
        criterion=_classification_criterion,
        hits=lambda logits, target: (logits.argmax(1) == target).sum(),
        val_extra=lambda logits, target: {},
        scorer=lambda config: lambda logits, target: F.cross_entropy(logits, target),
        summary=_classification_summary,
        test_metrics=_classification_test,
    ),
    "regression": Head(
        name="regression",
        hit="directional_accuracy",
        width=lambda classes: 1,
        target=lambda y: y.float(),
        criterion=_regression_criterion,
        hits=_direction_hits,
        val_extra=lambda pred, target: {
            "val_mae": float((pred.reshape(-1) - target).abs().mean().item())},
        scorer=lambda config: lambda pred, target: regression_loss(
            pred, target, str(config.loss), config.huber_delta),
        summary=_regression_summary,
        test_metrics=_regression_test,
    ),
}


def get_head(output_format: str) -> Head:
    """The head of ``decisions.output_format``."""
    try:
        return HEADS[output_format]
    except KeyError:
        raise ValueError(f"unknown output format {output_format!r}; allowed: "
                         f"{', '.join(HEADS)}") from None


def evaluate(model: nn.Module, X: Any, y: Any, *, device: torch.device, config: TrainingConfig,
             classes: Sequence[str], threshold: float | None = None) -> dict[str, Any]:
    """Test-split metrics of ``config.output_format``'s head (``threshold``: regression's
    cost-model threshold for the BUY/HOLD/SELL counts)."""
    return get_head(config.output_format).test_metrics(model, X, y, device, config, classes,
                                                       threshold)


def test_summary(test: dict[str, Any]) -> str:
    """A saved test result in one line, whichever head wrote it."""
    return HEADS[test.get("output_format", "classification")].summary(test)
