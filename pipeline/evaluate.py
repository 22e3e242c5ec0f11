"""Judge a trained model: test-split metrics and permutation feature importance.

Metrics follow scikit-learn's definitions (weighted by support, 0 where a ratio is undefined)
without depending on it; the formulas are short enough to read here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.events import OnEvent
from pipeline.labels import LABEL_NAMES
from pipeline.sequence import Windows

_CHUNK = 65536  # rows per forward pass: bounded memory on any split size


@torch.no_grad()
def _logits(model: nn.Module, X: Any, device: torch.device, classes: int = 3) -> Tensor:
    model.eval()
    if not isinstance(X, Windows):  # windows gather a chunk at a time
        X = torch.as_tensor(X, dtype=torch.float32)
    parts = [model(X[i : i + _CHUNK].to(device)).float().cpu() for i in range(0, len(X), _CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0, classes)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def evaluate_model(model: nn.Module, X: Any, y: Any, *, device: torch.device,
                   class_names: Sequence[str] = LABEL_NAMES) -> dict[str, Any]:
    """Accuracy, unweighted cross-entropy, support-weighted precision/recall/F1, the confusion
    matrix (rows true, columns predicted), per-class details, one per name in
    ``class_names`` (the label source's classes), and the majority-class baseline (the share
    of the split's biggest class, and its name). An empty split gives zeros."""
    k = len(class_names)
    y_true = torch.as_tensor(y).long().cpu()
    logits = _logits(model, X, torch.device(device), k)
    n = len(y_true)
    test_loss = float(F.cross_entropy(logits, y_true).item()) if n else 0.0
    y_pred = logits.argmax(1).numpy() if n else np.zeros(0, dtype=np.int64)
    truth = y_true.numpy()
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, y_pred), 1)

    per_class: dict[str, dict[str, float | int]] = {}
    weighted = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    for c, name in enumerate(class_names):
        hit = int(matrix[c, c])
        support = int(matrix[c].sum())
        precision = _ratio(hit, matrix[:, c].sum())
        recall = _ratio(hit, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        for key, value in (("precision", precision), ("recall", recall), ("f1", f1)):
            weighted[key] += _ratio(value * support, n)
    support = matrix.sum(1)
    biggest = int(np.argmax(support)) if n else 0
    return {
        "test_accuracy": _ratio(int(np.trace(matrix)), n),
        # What always answering the split's biggest class would score: a model is only worth
        # its accuracy above this (on a 66 % BUY split, 0.67 accuracy learned nothing).
        "baseline_accuracy": _ratio(int(support[biggest]), n),
        "baseline_class": class_names[biggest] if k else None,
        "test_loss": test_loss,
        **weighted,
        "class_counts": {name: int(matrix[c].sum()) for c, name in enumerate(class_names)},
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class,
    }


def permutation_importance(
    model: nn.Module,
    X: Any,
    y: Any,
    feature_names: list[str],
    *,
    seed: int,
    device: torch.device,
    on_event: OnEvent | None = None,
    score: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """How much the loss rises when one feature column is shuffled: unweighted cross-entropy
    by default, or ``score(outputs, y)`` (a head's loss; ``y`` then already as it wants it).

    For sequence windows (:class:`pipeline.sequence.Windows`) a feature is permuted across
    all time steps at once: each window gets another window's whole series of that feature.

    One pass per feature, each with the next permutation of ``np.random.default_rng(seed)``,
    so the same seed gives the same importances. Progress goes out as ``substep`` events at
    most once a second (and for the last feature).
    """
    device = torch.device(device)
    X = (X[:] if isinstance(X, Windows) else torch.as_tensor(X, dtype=torch.float32)).cpu()
    y_true = torch.as_tensor(y).cpu()
    if score is None:
        y_true, score = y_true.long(), F.cross_entropy
    if X.shape[-1] != len(feature_names):
        raise ValueError(f"{X.shape[-1]} feature columns but {len(feature_names)} names")
    if len(X) == 0:
        return {name: 0.0 for name in feature_names}
    baseline = float(score(_logits(model, X, device), y_true).item())
    rng = np.random.default_rng(seed)
    importance: dict[str, float] = {}
    last_event = -float("inf")
    for j, name in enumerate(feature_names):
        shuffled = X.clone()
        shuffled[..., j] = X[torch.from_numpy(rng.permutation(len(X))), ..., j]
        loss = float(score(_logits(model, shuffled, device), y_true).item())
        importance[name] = loss - baseline
        now = time.monotonic()
        if on_event is not None and (now - last_event >= 1.0 or j == len(feature_names) - 1):
            last_event = now
            message = f"feature importance {j + 1}/{len(feature_names)}: {name}"
            on_event({"type": "substep", "step": 10, "message": message})
    return importance
