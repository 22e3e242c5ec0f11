"""Training report: pictures of what the model learned, drawn from the saved files alone.

One PNG, up to five panels, each an axis labelled with its panel name (``ax.get_label()``):

- ``loss`` and ``accuracy``: train and validation per epoch, the restored best epoch marked,
  the validation split's majority-class share as the accuracy's baseline;
- ``confusion``: the test confusion matrix with counts, per-class precision (columns) and
  recall (rows) in the tick labels, the test accuracy against its majority-class baseline;
- ``per_class``: precision, recall and F1 of each class (a class never predicted is in red);
- ``labels``: the label distribution of the train, validation and test splits;
- ``importance``: permutation importance per feature, sorted.

A regression model (forward returns) has its own: ``direction`` (the directional accuracy per
epoch, against the share of the more frequent sign) instead of ``accuracy``, and instead of the
confusion matrix, per-class and label panels ``calibration`` (mean true return per decile of
the forecast, against the forecast: predicted vs actual, with the cost-model thresholds),
``residuals`` (forecast minus truth, histogram) and ``signals`` (the BUY/HOLD/SELL counts the
cost threshold gives the forecasts and the true returns). The title's last line gives each
split's first and last bar.

A saved version has everything. A running job has only its ``events.jsonl``, so its report
shows the two curve panels and leaves the other three out (the title says why): test metrics,
importance and the split counts exist only once the model is saved.

matplotlib is imported inside :func:`build_report_figure`, never at module level, so importing
this module (and ``pipeline.run``) stays cheap for processes that never draw. No pyplot: a bare
``Figure`` on the Agg canvas (named explicitly, whatever ``MPLBACKEND`` says) has no global
state and never opens a window.

Cost. The report is drawn inside the version's staging folder, so a published version always
has it (see :func:`pipeline.run._draw_report`); what made it slow was layout, not drawing.
Constrained layout measured every text twice per save (about half the time), so the panels are
placed at fixed positions in inches instead (the feature names' width sets the importance
panel's margin), and the PNG is compressed at zlib level 3 instead of 6 (a few % bigger, the
encoding about 35 % faster). docs/benchmarks.md has the before/after figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import report_panels as draw
from pipeline.report_panels import CLASS_NAMES, SPLITS, majority_share

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CLASS_NAMES", "PANELS", "REGRESSION_PANELS", "REPORT_FILE", "SPLITS", "ReportData",
           "build_report_figure", "report_data_from_events", "report_data_from_version",
           "write_report"]

REPORT_FILE = "report.png"
PANELS = ("loss", "accuracy", "confusion", "per_class", "labels", "importance")  # a classifier's
REGRESSION_PANELS = ("loss", "direction", "calibration", "residuals", "signals", "importance")
MIDDLE = ("confusion", "per_class", "labels", "calibration", "residuals", "signals")


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
    splits: dict[str, dict[str, Any]] | None = None  # split -> rows, first and last bar

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
            "per_class": bool(test.get("per_class")) and not self.regression,
            "labels": bool(self.labels) and not self.regression,
            "calibration": bool(test.get("calibration")),
            "residuals": bool((test.get("residuals") or {}).get("counts")),
            "signals": bool(test.get("signal_counts")),
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
        base = test.get("baseline_direction")
        details.append(f"test direction {test.get('directional_accuracy', 0):.3f}"
                       + ("" if base is None else f" (baseline {base:.3f})")
                       + f", MAE {test.get('mae', 0):.4g}, IC {test.get('spearman_ic', 0):+.3f}")
    elif test:
        details.append(f"test accuracy {test.get('test_accuracy', 0):.3f}"
                       f"{draw.baseline_text(test)}, F1 {test.get('f1', 0):.3f}")
    return ReportData(
        title=title,
        history=list(training.get("history") or []),
        best_epoch=training.get("best_epoch"),
        status="; ".join(str(d) for d in details if d),
        test=test,
        importance=features.get("importance") or None,
        labels=labels or None,
        splits=metrics.get("splits") or None,
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


def warm_up() -> None:
    """Import matplotlib's Agg path and draw once: fonts, caches and the first draw cost a
    process about as much as the report itself (0.57 s of CPU measured), once."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    FigureCanvasAgg(figure)
    figure.add_subplot().set_title("warm-up", y=1.0)
    figure.canvas.draw()


def warm_up_in_background() -> threading.Thread | None:
    """:func:`warm_up` on a thread of its own, started while the model trains (torch leaves
    the GIL during its kernels, so the import overlaps training on a second core), joined
    before the report is drawn. None where matplotlib is already loaded (a daemon worker, warmed
    in its fork server) or missing (the report is optional)."""
    if "matplotlib.backends.backend_agg" in sys.modules:
        return None

    def quietly() -> None:
        with contextlib.suppress(Exception):  # drawing the report will say what is wrong
            warm_up()

    thread = threading.Thread(target=quietly, name="report-warm-up", daemon=True)
    thread.start()
    return thread


_WIDTH = 14.0  # inches, at _DPI
_DPI = 100
_TITLE = 1.25  # inches above the first row: three title lines
_GAP = 0.95  # between rows: the next panel's title and this one's x labels
_BOTTOM = 0.6
_SIDE, _RIGHT, _COLUMN_GAP = 1.15, 0.3, 1.15  # margins and gaps leave room for tick labels
_ROW_HEIGHTS = {"curves": 3.3, "middle": 3.4}


def build_report_figure(data: ReportData) -> Figure:
    """The report as a matplotlib ``Figure`` on the Agg canvas (not yet saved), its panels at
    fixed places (no layout engine: see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = data.panels()
    middle = [p for p in MIDDLE if p in panels]
    importance = data.importance or {}
    rows: list[tuple[list[str], float]] = [(panels[:2], _ROW_HEIGHTS["curves"])]
    if middle:
        rows.append((middle, _ROW_HEIGHTS["middle"]))
    if "importance" in panels:
        rows.append((["importance"], max(2.2, 0.24 * len(importance))))
    height = _TITLE + sum(h for _, h in rows) + _GAP * (len(rows) - 1) + _BOTTOM
    fig = Figure(figsize=(_WIDTH, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.suptitle("\n".join(t for t in (data.title, data.status, _splits_line(data.splits)) if t),
                 fontsize=12, y=1 - 0.12 / height, va="top")
    top = height - _TITLE
    for names, row_height in rows:
        left = _SIDE
        if names == ["importance"]:  # room for the longest feature name
            left = max(_SIDE, 0.35 + 0.085 * max((len(k) for k in importance), default=0))
        width = (_WIDTH - left - _RIGHT - _COLUMN_GAP * (len(names) - 1)) / len(names)
        for k, name in enumerate(names):
            x = left + k * (width + _COLUMN_GAP)
            ax = fig.add_axes((x / _WIDTH, (top - row_height) / height, width / _WIDTH,
                               row_height / height), label=name)
            _draw_panel(name, ax, data)
        top -= row_height + _GAP
    return fig


def _draw_panel(name: str, ax: Any, data: ReportData) -> None:
    test, labels = data.test or {}, data.labels or {}
    if name in ("loss", "accuracy", "direction"):
        metric = {"loss": "loss", "accuracy": "accuracy",
                  "direction": "directional_accuracy"}[name]
        ylabel = {"loss": f"{test.get('loss', 'training')} loss" if data.regression
                  else "cross-entropy loss", "accuracy": "accuracy",
                  "direction": "directional accuracy"}[name]
        baseline = None if name == "loss" else majority_share(labels.get("validation"))
        draw.curves(ax, data.history, data.best_epoch, data.best_note, metric, ylabel, baseline)
    elif name == "labels":
        draw.labels(ax, labels)
    elif name == "importance":
        draw.importance(ax, data.importance or {})
    else:  # confusion, per_class, calibration, residuals, signals: from the test metrics
        getattr(draw, name)(ax, test)


def _splits_line(splits: dict[str, dict[str, Any]] | None) -> str:
    """"train 2017-01-02 .. 2017-09-12 (3,480 rows) | validation ..." from metrics' splits."""
    if not splits:
        return ""
    return "   |   ".join(
        f"{split} {s['first'][:10]} .. {s['last'][:10]} ({s.get('rows', 0):,} rows)"
        for split, s in splits.items() if s.get("first") and s.get("last"))


def write_report(data: ReportData, out: Path) -> Path:
    """Draw ``data`` to the PNG ``out``, atomically (readers never see half a file)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = build_report_figure(data)
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            fig.savefig(handle, format="png", pil_kwargs={"compress_level": 3})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return out
