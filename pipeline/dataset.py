"""Step 6: split every symbol chronologically on its own, then concatenate the splits.

Symbols are never a feature; each keeps its own labels (KTRDR reused the first symbol's labels
for all of them). Raw-indicator inputs are normalized with parameters fitted on the training
split only, so validation and test never leak into the scaling. Labels that look ``purge``
bars ahead (triple barrier) use the purged split of :mod:`pipeline.labels.purged` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import FeatureError
from pipeline.labels.purged import purged_split

SPLITS = ("train", "validation", "test")


@dataclass
class SymbolData:
    """One symbol's feature table (warm-up dropped) and its labels, row for row; ``weights``
    are per-row sample weights (triple barrier ``compute_weights``) or None."""

    symbol: str
    features: pd.DataFrame
    labels: np.ndarray
    weights: np.ndarray | None = None


@dataclass
class Dataset:
    """The arrays the trainer reads, plus what is needed to reproduce them at inference."""

    feature_names: list[str]
    X: dict[str, np.ndarray]  # split -> float32 (rows, features)
    y: dict[str, np.ndarray]  # split name -> int64 classes or float64 returns (rows,)
    normalization: dict[str, dict]  # feature -> {"method": ..., params}
    rows: dict[str, dict[str, int]]  # symbol -> split name -> rows (and "purged" if any)
    train_weights: np.ndarray | None = None  # sample weight per training row, or None
    # split -> {"first": ..., "last": ...}: the first and last bar (ISO time) over all symbols,
    # so a reader sees which period each number was measured on.
    spans: dict[str, dict[str, str]] = field(default_factory=dict)


def split_counts(n: int, split: Mapping[str, float]) -> tuple[int, int, int]:
    """Train: first int(N*train) rows; validation: to int(N*(train+validation)); test: rest."""
    n_train = int(n * split["train"])
    n_val = int(n * (split["train"] + split["validation"])) - n_train
    return n_train, n_val, n - n_train - n_val


def fit_normalization(
    train: np.ndarray, feature_names: list[str], methods: Mapping[str, str]
) -> dict[str, dict]:
    """Fit min-max or z-score parameters on the training rows of the features that ask for it."""
    params: dict[str, dict] = {}
    for column, name in enumerate(feature_names):
        method = methods.get(name, "none")
        values = train[:, column].astype(np.float64)
        if method == "minmax":
            params[name] = {"method": "minmax",
                            "min": float(values.min()), "max": float(values.max())}
        elif method == "zscore":
            params[name] = {"method": "zscore",
                            "mean": float(values.mean()), "std": float(values.std())}
    return params


def apply_normalization(
    X: np.ndarray, feature_names: list[str], params: Mapping[str, dict]
) -> np.ndarray:
    """Scale columns in place of a copy; a constant training column maps to 0, never to inf."""
    out = X.astype(np.float64, copy=True)
    for column, name in enumerate(feature_names):
        p = params.get(name)
        if p is None:
            continue
        if p["method"] == "minmax":
            span = p["max"] - p["min"]
            out[:, column] = (out[:, column] - p["min"]) / span if span > 0 else 0.0
        else:
            std = p["std"]
            out[:, column] = (out[:, column] - p["mean"]) / std if std > 0 else 0.0
    return out


def build_dataset(
    parts: list[SymbolData], split: Mapping[str, float], normalization: Mapping[str, str],
    purge: int | None = None,
) -> Dataset:
    """Split each symbol chronologically (purged when ``purge`` bars is given), concatenate in
    symbol order, normalize, cast."""
    if not parts:
        raise FeatureError("no symbol produced any rows")
    names = list(parts[0].features.columns)
    chunks: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    labels: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    weights: list[np.ndarray] = []
    rows: dict[str, dict[str, int]] = {}
    bounds: dict[str, list[Any]] = {s: [] for s in SPLITS}
    for part in parts:
        values = part.features.to_numpy(np.float64)
        picks = _split_rows(len(values), split, purge)
        for name in SPLITS:
            chunks[name].append(values[picks[name]])
            labels[name].append(part.labels[picks[name]])
            times = part.features.index[picks[name]]
            if len(times):
                bounds[name] += [times.min(), times.max()]
        if part.weights is not None:
            weights.append(part.weights[picks["train"]])
        rows[part.symbol] = {name: len(labels[name][-1]) for name in SPLITS}
        if purge is not None:
            rows[part.symbol]["purged"] = len(values) - sum(rows[part.symbol].values())
    X = {name: np.concatenate(chunks[name]) for name in SPLITS}
    # Classes as int64; regression targets (forward returns) stay float64.
    y = {name: _label_array(np.concatenate(labels[name])) for name in SPLITS}
    for name in SPLITS:
        if len(X[name]) == 0:
            raise FeatureError(
                f"the {name} split is empty ({sum(len(p.labels) for p in parts)} rows in all); "
                "use more data or change training.data_split"
            )
    params = fit_normalization(X["train"], names, normalization)
    X = {name: apply_normalization(X[name], names, params).astype(np.float32) for name in SPLITS}
    train_weights = np.concatenate(weights) if len(weights) == len(parts) else None
    spans = {name: {"first": min(bounds[name]).isoformat(), "last": max(bounds[name]).isoformat()}
             for name in SPLITS if bounds[name]}
    return Dataset(feature_names=names, X=X, y=y, normalization=params, rows=rows,
                   train_weights=train_weights, spans=spans)


def _label_array(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float64 if values.dtype.kind == "f" else np.int64)


def _split_rows(n: int, split: Mapping[str, float], purge: int | None
                ) -> dict[str, np.ndarray | slice]:
    """Rows of each split: contiguous slices, or purged index arrays."""
    if purge is not None:
        return dict(purged_split(n, purge, split))
    n_train, n_val, _ = split_counts(n, split)
    return {"train": slice(0, n_train), "validation": slice(n_train, n_train + n_val),
            "test": slice(n_train + n_val, n)}
