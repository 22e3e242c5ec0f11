"""The report's panels, one function each, drawn on an axis :mod:`pipeline.report` placed.

Each reads plain values (an epoch history, ``metrics.json``'s test section, the split label
counts) and draws what a reader needs to judge the model against doing nothing: every accuracy
is shown beside its majority-class baseline, and each class's precision, recall and F1 are drawn
apart, so a class the model never predicts (recall 0) stands out instead of vanishing in a
support-weighted F1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CLASS_NAMES = ("BUY", "HOLD", "SELL")  # label ids 0, 1, 2 (pipeline.labels)
SPLITS = ("train", "validation", "test")
SPLIT_COLORS = {"train": "#4c72b0", "validation": "#dd8452", "test": "#55a868"}
_METRIC_COLORS = {"precision": "#4c72b0", "recall": "#dd8452", "f1": "#55a868"}
_ALARM = "#c44e52"


def majority_share(counts: dict[str, Any] | None) -> tuple[str, float] | None:
    """The biggest class of a split and its share of the rows; for a regression split (its
    label statistics) the more frequent sign. None when there is nothing to count."""
    if not counts:
        return None
    if "positive" in counts and "rows" in counts:  # regression: returns' statistics
        rows, up = int(counts["rows"]), int(counts["positive"])
        if not rows:
            return None
        return ("up", up / rows) if up * 2 >= rows else ("not up", 1 - up / rows)
    total = sum(int(v) for v in counts.values())
    if not total:
        return None
    name = max(counts, key=lambda k: int(counts[k]))
    return name, int(counts[name]) / total


def curves(ax: Axes, history: list[dict[str, Any]], best_epoch: int | None, best_note: str,
           metric: str, ylabel: str, baseline: tuple[str, float] | None = None) -> None:
    """Train and validation ``metric`` per epoch, the best epoch marked; ``baseline`` (the
    validation split's majority share) as a dotted line for a hit-rate metric."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(f"{ylabel.capitalize()} per epoch", y=1.0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if not history:
        ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center",
                transform=ax.transAxes, color="gray")
        return
    epochs = [h["epoch"] for h in history]
    for split, key in (("train", f"train_{metric}"), ("validation", f"val_{metric}")):
        values = [h.get(key) for h in history]
        ax.plot(epochs, [float("nan") if v is None else v for v in values], marker=".",
                color=SPLIT_COLORS[split], label=split)
    if baseline is not None:
        ax.axhline(baseline[1], color=SPLIT_COLORS["validation"], linestyle=":", linewidth=1.2,
                   label=f"validation baseline: always {baseline[0]} ({baseline[1]:.3f})")
    best = next((h for h in history if h["epoch"] == best_epoch), None)
    if best is not None:
        ax.axvline(best["epoch"], color="black", linestyle="--", linewidth=1,
                   label=f"best epoch {best['epoch']} ({best_note})")
        if best.get(f"val_{metric}") is not None:
            ax.plot([best["epoch"]], [best[f"val_{metric}"]], marker="*", markersize=14,
                    color="black", linestyle="none")
    ax.legend(loc="best", fontsize=8)


def class_names(test: dict[str, Any]) -> list[str]:
    """The label source's classes, in order (regime has 4); older versions have BUY/HOLD/SELL."""
    per_class = test.get("per_class") or {}
    matrix = test.get("confusion_matrix") or []
    return list(per_class) if len(per_class) == len(matrix) else list(CLASS_NAMES)


def baseline_text(test: dict[str, Any]) -> str:
    """"baseline 0.663 (always BUY)" for a version that stored it, else nothing."""
    if test.get("baseline_class") is None:
        return ""
    return f" vs baseline {test['baseline_accuracy']:.3f} (always {test['baseline_class']})"


def confusion(ax: Axes, test: dict[str, Any]) -> None:
    """The test confusion matrix with counts, precision and recall in the tick labels."""
    matrix = test["confusion_matrix"]
    per_class = test.get("per_class") or {}
    ax.imshow(matrix, cmap="Blues")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=12,
                    color="white" if top and count > top / 2 else "black")

    def ratio(name: str, key: str) -> str:
        value = per_class.get(name, {}).get(key)
        return "-" if value is None else f"{value:.2f}"

    names = class_names(test)
    ax.set_xticks(range(len(names)),
                  [f"{n}\nprecision {ratio(n, 'precision')}" for n in names])
    ax.set_yticks(range(len(names)),
                  [f"{n}\nrecall {ratio(n, 'recall')}" for n in names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Test: accuracy {test.get('test_accuracy', 0):.3f}{baseline_text(test)}",
                 fontsize=10, y=1.0)


def per_class(ax: Axes, test: dict[str, Any]) -> None:
    """Precision, recall and F1 of each class on the test split, values on the bars; a class
    with rows but recall 0 (never predicted right) is named in red."""
    stats = test.get("per_class") or {}
    names = list(stats)
    width = 0.26
    for k, metric in enumerate(("precision", "recall", "f1")):
        values = [float(stats[n].get(metric, 0.0)) for n in names]
        xs = [i + (k - 1) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width, color=_METRIC_COLORS[metric], label=metric)
        ax.bar_label(bars, [f"{v:.2f}" for v in values], fontsize=7)
    missed = [bool(stats[n].get("support", 0)) and not stats[n].get("recall", 0) for n in names]
    ax.set_xticks(range(len(names)),
                  [f"{n}\n{stats[n].get('support', 0)} rows" + ("\nrecall 0" if miss else "")
                   for n, miss in zip(names, missed, strict=True)])
    for tick, miss in zip(ax.get_xticklabels(), missed, strict=True):
        if miss:
            tick.set_color(_ALARM)
    ax.set_ylim(0, 1.12)
    ax.set_title(f"Per class (test): weighted F1 {test.get('f1', 0):.3f}", fontsize=10, y=1.0)
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)


def labels(ax: Axes, counts: dict[str, dict[str, int]]) -> None:
    """Each split's share of each class, the row counts on the bars."""
    splits = [s for s in SPLITS if s in counts]
    width = 0.8 / max(len(splits), 1)
    names = list(counts[splits[0]]) if splits else list(CLASS_NAMES)
    for k, split in enumerate(splits):
        values = [int(counts[split].get(name, 0)) for name in names]
        total = sum(values) or 1
        xs = [c + (k - (len(splits) - 1) / 2) * width for c in range(len(names))]
        bars = ax.bar(xs, [100 * c / total for c in values], width,
                      color=SPLIT_COLORS[split], label=f"{split} ({sum(values)} rows)")
        ax.bar_label(bars, [str(c) for c in values], fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("% of the split's rows")
    ax.set_title("Label distribution per split (counts on the bars)", fontsize=10, y=1.0)
    ax.margins(y=0.12)
    ax.legend(loc="best", fontsize=8)


def importance(ax: Axes, values: dict[str, float]) -> None:
    """Permutation importance per feature, most important on top."""
    plain = {k: 0.0 if v is None else float(v) for k, v in values.items()}
    ranked = sorted(plain.items(), key=lambda kv: kv[1])  # barh draws bottom-up: largest on top
    ax.barh([k for k, _ in ranked], [v for _, v in ranked],
            color=["#4c72b0" if v >= 0 else _ALARM for _, v in ranked])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("rise in validation loss when the feature is shuffled")
    ax.set_title("Permutation importance (validation split), most important on top", y=1.0)
    ax.grid(axis="x", alpha=0.3)


def calibration(ax: Axes, test: dict[str, Any]) -> None:
    """Predicted vs actual: each point a decile of the test rows by forecast."""
    points = test["calibration"]
    xs = [p["pred_mean"] for p in points]
    ys = [p["actual_mean"] for p in points]
    ax.plot(xs, ys, marker="o", color=SPLIT_COLORS["test"], label="test rows, by forecast decile")
    low, high = min(xs + ys), max(xs + ys)
    ax.plot([low, high], [low, high], color="gray", linestyle=":", label="forecast = actual")
    ax.axhline(0, color="black", linewidth=0.6)
    threshold = test.get("threshold")
    if threshold is not None:
        for sign in (1, -1):
            ax.axvline(sign * threshold, color=_ALARM, linestyle="--", linewidth=1,
                       label="cost threshold" if sign > 0 else None)
    ax.set_xlabel("mean forecast return")
    ax.set_ylabel("mean actual return")
    base = test.get("baseline_direction")
    vs = "" if base is None else f" vs baseline {base:.3f}"
    ax.set_title(f"Predicted vs actual: IC {test.get('spearman_ic', 0):+.3f}, direction "
                 f"{test.get('directional_accuracy', 0):.3f}{vs}", fontsize=10, y=1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def residuals(ax: Axes, test: dict[str, Any]) -> None:
    """Forecast minus truth on the test rows."""
    edges, counts = test["residuals"]["edges"], test["residuals"]["counts"]
    widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=SPLIT_COLORS["test"],
           edgecolor="white")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("residual (forecast - actual return)")
    ax.set_ylabel("test rows")
    ax.set_title(f"Residuals: MAE {test.get('mae', 0):.4g}, RMSE {test.get('rmse', 0):.4g}",
                 fontsize=10, y=1.0)
    ax.grid(axis="y", alpha=0.3)


def signals(ax: Axes, test: dict[str, Any]) -> None:
    """What the cost threshold makes of the forecasts (the trades a strategy would take)
    beside what it makes of the true returns."""
    names = ("BUY", "HOLD", "SELL")
    pairs = (("forecast", test["signal_counts"], "#4c72b0"),
             ("actual return", test.get("actual_signal_counts") or {}, SPLIT_COLORS["test"]))
    for k, (what, counts, color) in enumerate(pairs):
        values = [int(counts.get(n, 0)) for n in names]
        bars = ax.bar([i + (k - 0.5) * 0.38 for i in range(3)], values, 0.38, color=color,
                      label=what)
        ax.bar_label(bars, [str(v) for v in values], fontsize=7)
    ax.set_xticks(range(3), names)
    ax.set_ylabel("test rows")
    ax.set_title(f"Signals at threshold ±{test.get('threshold', 0):g}", fontsize=10, y=1.0)
    ax.margins(y=0.12)
    ax.legend(loc="best", fontsize=8)
