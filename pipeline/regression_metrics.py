"""Judge a regression model (predicted forward returns) on the test split.

KTRDR evaluates its regression models with a Huber loss of delta 1.0 (not the training delta)
and a sign rule that differs from its training one (its defect 7). Here everything uses the
training loss with the training delta and one sign rule, ``pred > 0`` against ``y > 0``; and
what a return forecast is for, trading, is shown as the BUY/HOLD/SELL counts KTRDR's decision
function would give with the strategy's cost model: BUY when the forecast exceeds
``round_trip_cost x min_edge_multiplier``, SELL below minus that, HOLD between.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SIGNALS = ("BUY", "HOLD", "SELL")
_CALIBRATION_BINS = 10
_RESIDUAL_BINS = 20


def huber(errors: np.ndarray, delta: float) -> float:
    """Mean Huber loss of ``errors`` (prediction minus truth)."""
    a = np.abs(errors)
    return float(np.mean(np.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta))))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 where undefined (fewer than two
    rows, or a constant side), as the classification metrics give 0 where a ratio is."""
    if len(x) < 2:
        return 0.0
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    sx, sy = rx.std(), ry.std()
    if sx == 0 or sy == 0:
        return 0.0
    return float(np.mean((rx - rx.mean()) * (ry - ry.mean())) / (sx * sy))


def signal_counts(returns: np.ndarray, threshold: float) -> dict[str, int]:
    """What KTRDR's decision function makes of these returns: BUY above ``threshold``, SELL
    below ``-threshold``, HOLD otherwise."""
    buy = int(np.sum(returns > threshold))
    sell = int(np.sum(returns < -threshold))
    return {"BUY": buy, "HOLD": len(returns) - buy - sell, "SELL": sell}


def regression_metrics(pred: Any, y: Any, *, loss: str, huber_delta: float,
                       threshold: float | None) -> dict[str, Any]:
    """Loss (the training one, same delta), MAE, RMSE, directional accuracy and its baseline
    (the share of the more frequent sign of ``y``), Spearman IC, the
    signal counts the cost threshold gives (for the forecasts and for the true returns), and
    two summaries for the report: mean truth per forecast decile, and a residual histogram."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = len(y)
    errors = pred - y
    out: dict[str, Any] = {
        "output_format": "regression",
        "rows": n,
        "loss": loss,
        "test_loss": 0.0,
        "mae": 0.0,
        "rmse": 0.0,
        "directional_accuracy": 0.0,
        # Always guessing the split's more frequent sign (up or not): the direction baseline.
        "baseline_direction": 0.0,
        "spearman_ic": spearman(pred, y),
    }
    if loss == "huber":
        out["huber_delta"] = huber_delta
    if n:
        out["test_loss"] = huber(errors, huber_delta) if loss == "huber" else float(
            np.mean(errors ** 2))
        out["mae"] = float(np.mean(np.abs(errors)))
        out["rmse"] = float(np.sqrt(np.mean(errors ** 2)))
        out["directional_accuracy"] = float(np.mean((pred > 0) == (y > 0)))
        up = float(np.mean(y > 0))
        out["baseline_direction"] = max(up, 1.0 - up)
    if threshold is not None:
        out["threshold"] = threshold
        out["signal_counts"] = signal_counts(pred, threshold)
        out["actual_signal_counts"] = signal_counts(y, threshold)
    out["prediction"] = {"mean": float(pred.mean()) if n else 0.0,
                         "std": float(pred.std()) if n else 0.0}
    out["calibration"] = calibration(pred, y)
    out["residuals"] = histogram(errors)
    return out


def calibration(pred: np.ndarray, y: np.ndarray, bins: int = _CALIBRATION_BINS) -> list[dict]:
    """Rows sorted by forecast, cut into ``bins`` equal groups: each group's mean forecast and
    mean true return. A useful forecast rises with the truth; these points show whether."""
    if len(pred) == 0:
        return []
    order = np.argsort(pred, kind="stable")
    return [{"pred_mean": float(pred[part].mean()), "actual_mean": float(y[part].mean()),
             "rows": len(part)}
            for part in np.array_split(order, min(bins, len(pred))) if len(part)]


def histogram(values: np.ndarray, bins: int = _RESIDUAL_BINS) -> dict[str, list]:
    """Equal-width histogram of ``values``: ``edges`` (bins + 1) and ``counts`` (bins)."""
    if len(values) == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def label_stats(values: np.ndarray) -> dict[str, Any]:
    """A split's regression targets in a few numbers (the classification splits give counts)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"rows": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "positive": 0}
    return {"rows": len(v), "mean": float(v.mean()), "std": float(v.std()),
            "min": float(v.min()), "max": float(v.max()), "positive": int(np.sum(v > 0))}
