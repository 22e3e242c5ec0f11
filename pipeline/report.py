"""Training report: pictures of what the model learned, drawn from the saved files alone.

One PNG, up to five panels, each an axis labelled with its panel name (``ax.get_label()``):

- ``loss`` and ``accuracy``: train and validation per epoch, the restored best epoch marked;
- ``confusion``: the test confusion matrix with counts, per-class precision (columns) and
  recall (rows) in the tick labels;
- ``labels``: the label distribution of the train, validation and test splits;
- ``importance``: permutation importance per feature, sorted.

A regression model (forward returns) has its own: ``direction`` (the directional accuracy per
epoch) instead of ``accuracy``, and instead of the confusion matrix and label counts
``calibration`` (mean true return per decile of the forecast, against the forecast: predicted
vs actual, with the cost-model thresholds) and ``residuals`` (forecast minus truth, histogram).

A saved version has everything. A running job has only its ``events.jsonl``, so its report
shows the two curve panels and leaves the other three out (the title says why): test metrics,
importance and the split counts exist only once the model is saved.

matplotlib is imported inside :func:`build_report_figure`, never at module level, so importing
this module (and ``pipeline.run``) stays cheap for processes that never draw. No pyplot: a bare
``Figure`` on the Agg canvas has no global state and never opens a window.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

REPORT_FILE = "report.png"
CLASS_NAMES = ("BUY", "HOLD", "SELL")  # label ids 0, 1, 2 (pipeline.labels)
SPLITS = ("train", "validation", "test")
PANELS = ("loss", "accuracy", "confusion", "labels", "importance")  # a classifier's
REGRESSION_PANELS = ("loss", "direction", "calibration", "residuals", "importance")
_SPLIT_COLORS = {"train": "#4c72b0", "validation": "#dd8452", "test": "#55a868"}


@dataclass
class ReportData:
    """Everything a report draws; ``None`` leaves a panel out."""

    title: str
    history: list[dict[str, Any]]  # epoch dicts: epoch, train_loss, train_accuracy, val_...
    best_epoch: int | None = None
    best_note: str = "restored"  # a saved model holds the best epoch's weights
    status: str | None = None  # the line under the title
    test: dict[str, Any] | None = None  # metrics.json "test": confusion_matrix, per_class, ...
    importance: dict[str, float] | None = None
    labels: dict[str, dict[str, int]] | None = None  # split -> class name -> rows

    @property
    def regression(self) -> bool:
        """A regression model's data: its test says so, or its epochs have directions."""
        if self.test and self.test.get("output_format") == "regression":
            return True
        return bool(self.history) and "train_directional_accuracy" in self.history[0]

    def panels(self) -> list[str]:
        """The panel names this data fills, in drawing order."""
        test = self.test or {}
        present = {
            "loss": True,
            "accuracy": not self.regression,
            "direction": self.regression,
            "confusion": bool(test.get("confusion_matrix")),
            "labels": bool(self.labels) and not self.regression,
            "calibration": bool(test.get("calibration")),
            "residuals": bool((test.get("residuals") or {}).get("counts")),
            "importance": bool(self.importance),
        }
        order = REGRESSION_PANELS if self.regression else PANELS
        return [name for name in order if present[name]]


# -- reading ---------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def report_data_from_version(folder: Path) -> ReportData:
    """Read a model version folder (or its ``_latest`` link, or a staging folder)."""
    folder = Path(folder).resolve()
    metrics = _read_json(folder / "metrics.json")
    if not metrics:
        raise FileNotFoundError(f"{folder} has no metrics.json: not a saved model version")
    features = _read_json(folder / "features.json")
    meta = _read_json(folder / "metadata.json")
    training = metrics.get("training", {})
    test = metrics.get("test") or None
    labels = metrics.get("labels")
    if not labels and test and test.get("class_counts"):
        labels = {"test": test["class_counts"]}  # versions saved before splits were counted
    name = " ".join(str(p) for p in (meta.get("strategy"), meta.get("timeframe")) if p)
    version = re.search(r"_v(\d+)$", folder.name)
    title = f"{name or folder.name}" + (f" v{version.group(1)}" if version else "")
    details = [meta.get("created_at"), ", ".join(meta.get("symbols") or []),
               meta.get("device") and f"trained on {meta['device']}"]
    if test and test.get("output_format") == "regression":
        details.append(f"test direction {test.get('directional_accuracy', 0):.3f}, "
                       f"MAE {test.get('mae', 0):.4g}, IC {test.get('spearman_ic', 0):+.3f}")
    elif test:
        details.append(f"test accuracy {test.get('test_accuracy', 0):.3f}, "
                       f"F1 {test.get('f1', 0):.3f}")
    return ReportData(
        title=title,
        history=list(training.get("history") or []),
        best_epoch=training.get("best_epoch"),
        status="; ".join(str(d) for d in details if d),
        test=test,
        importance=features.get("importance") or None,
        labels=labels or None,
    )


def report_data_from_events(events_path: Path, title: str | None = None,
                            state: str | None = None) -> ReportData:
    """Read a job's ``events.jsonl``, for a job still running or one that saved nothing.

    Curves only (see the module docstring). A torn last line (the writer is appending right
    now) is skipped. An epoch number at or below the last one seen starts the curve again
    from there: a resumed attempt repeats epochs after its checkpoint, a retry starts at 1.
    ``state`` (the spool's view of the job) wins over the last ``state`` event in the file.
    """
    events_path = Path(events_path)
    history: list[dict[str, Any]] = []
    best, last_state, epochs = None, None, None
    try:
        lines = events_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("type") == "epoch":
            history = [h for h in history if h["epoch"] < event["epoch"]]
            history.append(event)
            best, epochs = event.get("best_epoch"), event.get("epochs")
        elif event.get("type") == "state":
            last_state = event.get("state")
    state = state or last_state or "running"
    progress = f"epoch {history[-1]['epoch']}/{epochs}" if history else "no epoch finished yet"
    return ReportData(
        title=title or events_path.parent.name,
        history=history,
        best_epoch=best,
        best_note="best so far" if state in ("running", "queued") else "lowest val_loss",
        status=f"job {state}, {progress}; test metrics, feature importance and label counts "
               "appear once the model is saved",
    )


# -- drawing ---------------------------------------------------------------------------------


def build_report_figure(data: ReportData) -> Figure:
    """The report as a matplotlib ``Figure`` on the Agg canvas (not yet saved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = data.panels()
    pair = [p for p in ("confusion", "labels", "calibration", "residuals") if p in panels]
    middle = bool(pair)
    n_features = len(data.importance or {})
    heights = [1.0] + ([1.15] if middle else []) + (
        [max(1.0, 0.12 * n_features)] if n_features else [])
    fig = Figure(figsize=(14, 1.2 + 4.2 * sum(heights)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights)
    fig.suptitle(f"{data.title}\n{data.status or ''}".strip(), fontsize=13)

    if data.regression:
        loss = (data.test or {}).get("loss", "training")
        _curves(fig.add_subplot(grid[0, 0], label="loss"), data, "loss", f"{loss} loss")
        _curves(fig.add_subplot(grid[0, 1], label="direction"), data, "directional_accuracy",
                "directional accuracy")
    else:
        _curves(fig.add_subplot(grid[0, 0], label="loss"), data, "loss", "cross-entropy loss")
        _curves(fig.add_subplot(grid[0, 1], label="accuracy"), data, "accuracy", "accuracy")
    draw = {"confusion": lambda ax: _confusion(ax, data.test or {}),
            "labels": lambda ax: _labels(ax, data.labels or {}),
            "calibration": lambda ax: _calibration(ax, data.test or {}),
            "residuals": lambda ax: _residuals(ax, data.test or {})}
    for column, name in enumerate(pair[:2]):
        draw[name](fig.add_subplot(grid[1, column], label=name))
    if "importance" in panels:
        _importance(fig.add_subplot(grid[len(heights) - 1, :], label="importance"),
                    data.importance or {})
    return fig


def write_report(data: ReportData, out: Path) -> Path:
    """Draw ``data`` to the PNG ``out``, atomically (readers never see half a file)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = build_report_figure(data)
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            fig.savefig(handle, format="png")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return out


def _curves(ax: Axes, data: ReportData, metric: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(f"{ylabel.capitalize()} per epoch")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if not data.history:
        ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center",
                transform=ax.transAxes, color="gray")
        return
    epochs = [h["epoch"] for h in data.history]
    for split, key, color in (("train", f"train_{metric}", _SPLIT_COLORS["train"]),
                              ("validation", f"val_{metric}", _SPLIT_COLORS["validation"])):
        values = [h.get(key) for h in data.history]
        ax.plot(epochs, [float("nan") if v is None else v for v in values], marker=".",
                color=color, label=split)
    best = next((h for h in data.history if h["epoch"] == data.best_epoch), None)
    if best is not None:
        ax.axvline(best["epoch"], color="black", linestyle="--", linewidth=1,
                   label=f"best epoch {best['epoch']} ({data.best_note})")
        if best.get(f"val_{metric}") is not None:
            ax.plot([best["epoch"]], [best[f"val_{metric}"]], marker="*", markersize=14,
                    color="black", linestyle="none")
    ax.legend(loc="best")


def _confusion(ax: Axes, test: dict[str, Any]) -> None:
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

    # The label source's classes, in order (regime has 4); older versions have BUY/HOLD/SELL.
    names = list(per_class) if len(per_class) == len(matrix) else list(CLASS_NAMES)
    ax.set_xticks(range(len(names)),
                  [f"{n}\nprecision {ratio(n, 'precision')}" for n in names])
    ax.set_yticks(range(len(names)),
                  [f"{n}\nrecall {ratio(n, 'recall')}" for n in names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Test confusion matrix: accuracy {test.get('test_accuracy', 0):.3f}, "
                 f"F1 {test.get('f1', 0):.3f} (weighted)")


def _labels(ax: Axes, labels: dict[str, dict[str, int]]) -> None:
    splits = [s for s in SPLITS if s in labels]
    width = 0.8 / len(splits)
    names = list(labels[splits[0]]) if splits else list(CLASS_NAMES)
    for k, split in enumerate(splits):
        counts = [int(labels[split].get(name, 0)) for name in names]
        total = sum(counts) or 1
        xs = [c + (k - (len(splits) - 1) / 2) * width for c in range(len(names))]
        bars = ax.bar(xs, [100 * c / total for c in counts], width,
                      color=_SPLIT_COLORS[split], label=f"{split} ({sum(counts)} rows)")
        ax.bar_label(bars, [str(c) for c in counts], fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("% of the split's rows (counts on the bars)")
    ax.set_title("Label distribution per split")
    ax.margins(y=0.12)
    ax.legend(loc="best")


def _importance(ax: Axes, importance: dict[str, float]) -> None:
    plain = {k: 0.0 if v is None else float(v) for k, v in importance.items()}
    ranked = sorted(plain.items(), key=lambda kv: kv[1])  # barh draws bottom-up: largest on top
    names = [k for k, _ in ranked]
    values = [v for _, v in ranked]
    ax.barh(names, values, color=["#4c72b0" if v >= 0 else "#c44e52" for v in values])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("rise in validation loss when the feature is shuffled")
    ax.set_title("Permutation importance (validation split), most important on top")
    ax.grid(axis="x", alpha=0.3)


def _calibration(ax: Axes, test: dict[str, Any]) -> None:
    """Predicted vs actual: each point a decile of the test rows by forecast."""
    points = test["calibration"]
    xs = [p["pred_mean"] for p in points]
    ys = [p["actual_mean"] for p in points]
    ax.plot(xs, ys, marker="o", color=_SPLIT_COLORS["test"], label="test rows, by forecast decile")
    low, high = min(xs + ys), max(xs + ys)
    ax.plot([low, high], [low, high], color="gray", linestyle=":", label="forecast = actual")
    ax.axhline(0, color="black", linewidth=0.6)
    threshold = test.get("threshold")
    if threshold is not None:
        for sign in (1, -1):
            ax.axvline(sign * threshold, color="#c44e52", linestyle="--", linewidth=1,
                       label="cost threshold" if sign > 0 else None)
    counts = test.get("signal_counts")
    signals = "" if not counts else " (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
    ax.set_xlabel("mean forecast return")
    ax.set_ylabel("mean actual return")
    ax.set_title(f"Predicted vs actual: IC {test.get('spearman_ic', 0):+.3f}, direction "
                 f"{test.get('directional_accuracy', 0):.3f}{signals}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _residuals(ax: Axes, test: dict[str, Any]) -> None:
    """Forecast minus truth on the test rows."""
    edges, counts = test["residuals"]["edges"], test["residuals"]["counts"]
    widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=_SPLIT_COLORS["test"],
           edgecolor="white")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("residual (forecast - actual return)")
    ax.set_ylabel("test rows")
    ax.set_title(f"Residuals: MAE {test.get('mae', 0):.4g}, RMSE {test.get('rmse', 0):.4g}")
    ax.grid(axis="y", alpha=0.3)
