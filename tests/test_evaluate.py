"""Evaluation metrics against a hand-computed example, and permutation importance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.evaluate import evaluate_model, permutation_importance

CPU = torch.device("cpu")


class Logits(nn.Module):
    """The input rows are the logits: lets a test choose every prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FirstFeature(nn.Module):
    """Predicts BUY when feature 0 > 0, else SELL; ignores every other feature."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x[:, :1] * 5
        return torch.cat([f, torch.zeros_like(f), -f], dim=1)


# Confusion matrix (rows true, columns predicted):
#   BUY  [2, 1, 1]   support 4
#   HOLD [0, 1, 1]   support 2
#   SELL [1, 0, 3]   support 4
PAIRS = [(0, 0), (0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 0), (2, 2), (2, 2), (2, 2)]


def example():
    y = torch.tensor([t for t, _ in PAIRS])
    X = torch.zeros(len(PAIRS), 3)
    X[torch.arange(len(PAIRS)), torch.tensor([p for _, p in PAIRS])] = 2.0
    return X, y


def test_metrics_match_hand_computation() -> None:
    X, y = example()
    m = evaluate_model(Logits(), X, y, device=CPU)
    assert m["confusion_matrix"] == [[2, 1, 1], [0, 1, 1], [1, 0, 3]]
    assert m["class_counts"] == {"BUY": 4, "HOLD": 2, "SELL": 4}
    assert m["test_accuracy"] == pytest.approx(0.6)
    # per class: precision = tp / column sum, recall = tp / row sum, f1 = 2pr / (p + r)
    assert m["per_class"]["BUY"] == pytest.approx(
        {"precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "support": 4}
    )
    assert m["per_class"]["HOLD"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["per_class"]["SELL"] == pytest.approx(
        {"precision": 0.6, "recall": 0.75, "f1": 2 / 3, "support": 4}
    )
    # weighted by support (scikit-learn average="weighted")
    assert m["precision"] == pytest.approx(91 / 150)
    assert m["recall"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(25 / 42)
    # unweighted cross-entropy: a right answer costs -log(e^2/(e^2+2)), a wrong one -log(1/(e^2+2))
    right, wrong = -math.log(math.e**2 / (math.e**2 + 2)), math.log(math.e**2 + 2)
    assert m["test_loss"] == pytest.approx((6 * right + 4 * wrong) / 10, rel=1e-6)


def test_undefined_ratios_are_zero() -> None:
    # HOLD is never predicted and never true: precision, recall and f1 are 0, not NaN
    y = torch.tensor([0, 0, 2, 2])
    X = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])
    m = evaluate_model(Logits(), X, y, device=CPU)
    assert m["per_class"]["HOLD"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["BUY"]["precision"] == 1.0
    assert m["per_class"]["BUY"]["recall"] == 0.5
    assert m["test_accuracy"] == 0.75


def test_empty_split_gives_zeros() -> None:
    m = evaluate_model(Logits(), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), device=CPU)
    assert m["test_accuracy"] == 0.0 and m["confusion_matrix"] == [[0] * 3] * 3


def test_permutation_importance_is_seeded_and_finds_the_used_feature() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 3, generator=g)
    y = torch.where(X[:, 0] > 0, 0, 2)
    original = X.clone()
    names = ["used", "noise_a", "noise_b"]
    events: list[dict] = []
    first = permutation_importance(
        FirstFeature(), X, y, names, seed=5, device=CPU, on_event=events.append
    )
    again = permutation_importance(FirstFeature(), X, y, names, seed=5, device=CPU)
    assert first == again
    assert first["used"] > 1.0
    assert first["noise_a"] == 0.0 and first["noise_b"] == 0.0
    assert events and events[-1]["type"] == "substep" and "3/3" in events[-1]["message"]
    assert torch.equal(X, original)  # the caller's data is not shuffled in place
    other = permutation_importance(FirstFeature(), X, y, names, seed=6, device=CPU)
    assert other["used"] != first["used"]
