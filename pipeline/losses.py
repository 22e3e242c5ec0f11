"""Training losses: inverse-frequency class weights, focal loss, and the regression losses.

Each function is the formula written out once; :mod:`pipeline.heads` picks them per output
format, and evaluation reuses the same ones, so a test loss means what the training loss meant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.model import NUM_CLASSES


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


def regression_loss(pred: Tensor, target: Tensor, loss: str, huber_delta: float) -> Tensor:
    """Mean Huber loss (``0.5 e^2`` when ``|e| < delta``, else ``delta (|e| - 0.5 delta)``) or
    mean squared error, of one prediction per row."""
    pred = pred.reshape(-1)
    if loss == "huber":
        return F.huber_loss(pred, target, delta=huber_delta)
    return F.mse_loss(pred, target)
