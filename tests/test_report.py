"""Training report: drawn into every saved version, and by ``ktrdr-daemon report`` from the files
alone, for a saved model and for a job that is still running (real training, real spool files).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ktrdr_daemon.cli import main
from ktrdr_daemon.progress import ProgressWriter
from ktrdr_daemon.spool import (
    Claim,
    DaemonIdentity,
    Incoming,
    Spool,
    accept_drop,
    job_state,
    submit_drop,
    try_claim,
    write_result,
)
from pipeline.events import STEPS
from pipeline.job import load_job
from pipeline.market_data import default_data_root
from pipeline.model import build_mlp
from pipeline.report import (
    PANELS,
    REPORT_FILE,
    build_report_figure,
    report_data_from_events,
    report_data_from_version,
)
from pipeline.run import run_training
from pipeline.store import FILES, ModelStore

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = REPO / "config" / "strategies"
EPOCHS = 10


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header; fails unless the file starts like a real PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND", f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


def axis(fig, name: str):
    (found,) = [ax for ax in fig.axes if ax.get_label() == name]
    return found


def train(models: Path, **run_kwargs):
    job = load_job({"strategy": "multi_indicator.yaml",
                    "overrides": {"training": {"epochs": EPOCHS}}},
                   strategies_root=STRATEGIES)
    return run_training(job, data_root=default_data_root(), models_root=models, **run_kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    return train(tmp_path_factory.mktemp("models"))


def test_every_saved_version_holds_its_report(trained) -> None:
    folder = trained.model_path
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, REPORT_FILE])
    width, height = png_size(folder / REPORT_FILE)
    assert (width, height) >= (1000, 1000) and width <= 3000 and height <= 4000
    assert 30_000 < (folder / REPORT_FILE).stat().st_size < 3_000_000
    # The label counts the report draws are stored with the metrics, and they add up.
    metrics = json.loads((folder / "metrics.json").read_text())
    labels = metrics["labels"]
    for split in ("train", "validation", "test"):
        assert sum(labels[split].values()) == sum(r[split] for r in metrics["rows"].values())
    assert labels["test"] == metrics["test"]["class_counts"]


def test_report_figure_shows_what_the_model_learned(trained) -> None:
    folder = trained.model_path
    metrics = json.loads((folder / "metrics.json").read_text())
    importance = json.loads((folder / "features.json").read_text())["importance"]
    data = report_data_from_version(folder)
    fig = build_report_figure(data)
    assert [ax.get_label() for ax in fig.axes] == list(PANELS)

    history = metrics["training"]["history"]
    best = metrics["training"]["best_epoch"]
    for name, key in (("loss", "loss"), ("accuracy", "accuracy")):
        lines = {line.get_label(): line for line in axis(fig, name).get_lines()}
        assert list(lines["train"].get_xdata()) == [h["epoch"] for h in history]
        assert list(lines["validation"].get_ydata()) == pytest.approx(
            [h[f"val_{key}"] for h in history])
        marker = lines[f"best epoch {best} (restored)"]
        assert list(marker.get_xdata()) == [best, best]

    confusion = axis(fig, "confusion")
    counts = [int(t.get_text()) for t in confusion.texts]
    assert counts == [c for row in metrics["test"]["confusion_matrix"] for c in row]
    per_class = metrics["test"]["per_class"]
    xticks = [t.get_text() for t in confusion.get_xticklabels()]
    yticks = [t.get_text() for t in confusion.get_yticklabels()]
    for i, name in enumerate(("BUY", "HOLD", "SELL")):
        assert xticks[i] == f"{name}\nprecision {per_class[name]['precision']:.2f}"
        assert yticks[i] == f"{name}\nrecall {per_class[name]['recall']:.2f}"

    bars = axis(fig, "labels").texts  # the counts drawn on the bars, split by split
    expected = [str(metrics["labels"][s][c]) for s in ("train", "validation", "test")
                for c in ("BUY", "HOLD", "SELL")]
    assert [t.get_text() for t in bars] == expected

    # Each class's precision, recall and F1 on its own bars; the test accuracy beside the
    # share of the test split's biggest class (what always answering it would score).
    drawn = [t.get_text() for t in axis(fig, "per_class").texts]
    assert drawn == [f"{per_class[c][m]:.2f}" for m in ("precision", "recall", "f1")
                     for c in ("BUY", "HOLD", "SELL")]
    test_counts = metrics["labels"]["test"]
    biggest = max(test_counts, key=test_counts.get)
    assert metrics["test"]["baseline_class"] == biggest
    assert metrics["test"]["baseline_accuracy"] == pytest.approx(
        test_counts[biggest] / sum(test_counts.values()))
    assert f"vs baseline {metrics['test']['baseline_accuracy']:.3f} (always {biggest})" in (
        axis(fig, "confusion").get_title())
    splits = metrics["splits"]
    assert splits["train"]["last"] <= splits["validation"]["first"] < splits["test"]["first"]
    assert {s: splits[s]["rows"] for s in splits} == {
        s: sum(metrics["labels"][s].values()) for s in splits}
    assert f"test {splits['test']['first'][:10]} .. {splits['test']['last'][:10]}" in (
        fig.get_suptitle())

    ranked = [t.get_text() for t in axis(fig, "importance").get_yticklabels()][::-1]
    assert ranked == sorted(importance, key=lambda k: importance[k], reverse=True)


def test_cli_report_for_a_model_path(trained, tmp_path: Path, capsys) -> None:
    latest = trained.model_path.parent / f"{trained.model_path.name.split('_v')[0]}_latest"
    out = tmp_path / "deep" / "r.png"
    assert main(["report", str(latest), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "importance" in printed
    assert png_size(out) == png_size(trained.model_path / REPORT_FILE)
    assert not list(out.parent.glob(".*tmp")), "no temporary file left beside the report"


def test_models_lists_headline_metrics_and_report_path(trained, capsys) -> None:
    models = str(trained.model_path.parents[1])
    assert main(["models", "--models", models, "--strategies", str(STRATEGIES), "--json"]) == 0
    rows = {r["strategy"]: r for r in json.loads(capsys.readouterr().out)}
    (version,) = rows["multi_indicator"]["versions"]
    test = trained.metrics["test"]
    assert version["report"] == str(trained.model_path / REPORT_FILE)
    assert version["test_accuracy"] == pytest.approx(test["test_accuracy"])
    assert version["precision"] == pytest.approx(test["precision"])
    assert main(["models", "multi_indicator", "--models", models]) == 0
    assert f"report {trained.model_path / REPORT_FILE}" in capsys.readouterr().out


def running_job(root: Path) -> tuple[Spool, str, ProgressWriter, Claim]:
    """A job in a real spool, claimed by this process, with a progress writer on its folder."""
    spool = Spool(root)
    spool.ensure_layout()
    submit_drop(spool, b"strategy: multi_indicator.yaml\n", "eurusd.yaml")
    (job_id,) = [accept_drop(spool, p) for p in Incoming(spool).complete_drops()]
    claim = try_claim(spool, job_id, DaemonIdentity.current("report-test"))
    assert claim is not None
    writer = ProgressWriter(spool.job_dir(job_id), spool.tmp, job_id=job_id, attempt=1,
                            daemon="report-test", host="here", device="cpu")
    writer.set_state("running")
    return spool, job_id, writer, claim


def epoch(n: int, best: int, loss: float) -> dict:
    return {"type": "epoch", "epoch": n, "epochs": 20, "train_loss": loss,
            "train_accuracy": 0.5 + n / 100, "val_loss": loss + 0.1,
            "val_accuracy": 0.45 + n / 100, "learning_rate": 1e-3, "duration": 0.05,
            "best_epoch": best, "best_val_loss": 1.0}


def test_report_of_a_job_still_running(tmp_path: Path, capsys) -> None:
    spool, job_id, writer, _ = running_job(tmp_path / "spool")
    for number, name in enumerate(STEPS[:8], start=1):
        writer({"type": "step", "step": number, "steps": 12, "name": name,
                "message": f"{number}. {name}"})
    for n, best in ((1, 1), (2, 2), (3, 2)):
        writer({"type": "batch", "epoch": n, "epochs": 20, "batch": 5, "batches": 10})
        writer(epoch(n, best, 1.0 - n / 10))
    job_dir = spool.job_dir(job_id)
    with open(job_dir / "events.jsonl", "a") as events:  # the writer caught mid-line
        events.write('{"at": "2026-01-01T00:00:00Z", "type": "epo')
    assert job_state(spool, job_id) == "running" and not (job_dir / "result.json").exists()

    out = tmp_path / "running.png"
    assert main(["report", job_id, "--spool", str(spool.root), "--out", str(out)]) == 0
    assert f"report written to {out} (loss, accuracy)" in capsys.readouterr().out
    png_size(out)

    data = report_data_from_events(job_dir / "events.jsonl", state="running")
    assert [h["epoch"] for h in data.history] == [1, 2, 3] and data.best_epoch == 2
    assert "running, epoch 3/20" in data.status
    fig = build_report_figure(data)
    assert [ax.get_label() for ax in fig.axes] == ["loss", "accuracy"]
    (val,) = [ln for ln in axis(fig, "loss").get_lines() if ln.get_label() == "validation"]
    assert list(val.get_ydata()) == pytest.approx([1.0, 0.9, 0.8])
    assert "best epoch 2 (best so far)" in [ln.get_label() for ln in axis(fig, "loss").get_lines()]
    writer.close()


def test_events_after_a_resume_or_retry_replace_the_old_curve(tmp_path: Path) -> None:
    spool, job_id, writer, _ = running_job(tmp_path / "spool")
    for n in (1, 2, 3, 4):
        writer(epoch(n, n, 2.0))
    for n in (3, 4, 5):  # attempt 2 resumed from the epoch-2 checkpoint
        writer(epoch(n, n, 1.0))
    writer.close()
    events = spool.job_dir(job_id) / "events.jsonl"
    data = report_data_from_events(events)
    assert [(h["epoch"], h["train_loss"]) for h in data.history] == [
        (1, 2.0), (2, 2.0), (3, 1.0), (4, 1.0), (5, 1.0)]
    with open(events, "a") as handle:  # a retry starts again at epoch 1
        handle.write(json.dumps(epoch(1, 1, 0.5)) + "\n")
    assert [h["epoch"] for h in report_data_from_events(events).history] == [1]
    empty = report_data_from_events(tmp_path / "nothing" / "events.jsonl")
    assert empty.history == [] and "no epoch finished yet" in empty.status
    build_report_figure(empty)  # draws the empty panels without failing


def test_report_of_a_completed_job_draws_its_model(trained, tmp_path: Path, capsys) -> None:
    spool, job_id, writer, claim = running_job(tmp_path / "spool")
    writer(epoch(1, 1, 1.0))
    writer.close()
    assert write_result(spool, job_id, "completed", claim, model_path=str(trained.model_path))
    out = tmp_path / "done.png"
    assert main(["report", job_id, "--spool", str(spool.root), "--out", str(out)]) == 0
    assert ", ".join(PANELS) in capsys.readouterr().out


def test_report_of_nothing_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["report", "no-such-job", "--spool", str(tmp_path)]) == 1
    assert "not a job" in capsys.readouterr().err


def test_a_failing_extra_file_publishes_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    kwargs = dict(strategy_name="s", base_timeframe="1h", model=build_mlp(3, [4], 0.0, "relu"),
                  config={}, metrics={}, features={}, metadata={}, metadata_v3={})

    def fail(folder: Path) -> None:
        (folder / REPORT_FILE).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.save(**kwargs, extra_files=fail)
    assert store.versions() == [] and list((tmp_path / ".staging").iterdir()) == []
    folder = store.save(**kwargs, extra_files=lambda f: (f / "extra.txt").write_text("x"))
    assert (folder / "extra.txt").read_text() == "x"


def test_a_report_that_cannot_be_drawn_is_a_warning_not_a_lost_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.run

    def broken(data, out):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(pipeline.run, "write_report", broken)
    events: list[dict] = []
    result = train(tmp_path, on_event=events.append)
    assert (result.model_path / "model.pt").is_file()
    assert not (result.model_path / REPORT_FILE).exists()
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert any("report.png not drawn (RuntimeError: no fonts)" in w for w in warnings)
    torch.load(result.model_path / "model.pt", weights_only=True)


def test_importing_the_pipeline_does_not_import_matplotlib() -> None:
    code = "import sys, pipeline.run; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"
