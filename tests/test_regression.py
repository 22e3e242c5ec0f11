"""Regression (forward-return) models through every step: metrics on a hand-checked example,
the head's loss, and a strategy of our own trained by ``ktrdr-daemon train`` on the bundled
EURUSD 1h, saved, loaded back here and down KTRDR's loaders' path, reported, and exported by
``ktrdr-daemon features``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import ktrdr_path as kp
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from ktrdr_daemon.progress import ProgressWriter
from pipeline.errors import PipelineError
from pipeline.heads import evaluate, get_head
from pipeline.labels.forward_return import forward_returns
from pipeline.market_data import default_data_root, read_price_file
from pipeline.regression_metrics import regression_metrics, signal_counts, spearman
from pipeline.report import REPORT_FILE, build_report_figure, report_data_from_version
from pipeline.store import ModelStore, predict, predict_proba
from pipeline.training_keys import TrainingConfig

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
COST = {"round_trip_cost": 0.003, "min_edge_multiplier": 1.5}

STRATEGY = {
    "name": "fr_regression",
    "version": "3.0",
    "training_data": {"symbols": {"mode": "single", "symbol": "EURUSD"},
                      "timeframes": {"mode": "single", "timeframe": "1h"}},
    "indicators": {"rsi_14": {"type": "rsi", "period": 14},
                   "roc_10": {"type": "roc", "period": 10}},
    "fuzzy_sets": {"rsi_zone": {"indicator": "rsi_14", "low": [0, 25, 45],
                                "mid": [35, 50, 65], "high": [55, 75, 100]}},
    "nn_inputs": [{"fuzzy_set": "rsi_zone", "timeframes": "all"},
                  {"raw_indicator": "roc_10", "timeframes": "all", "normalization": "zscore"}],
    "model": {"type": "mlp", "architecture": {"hidden_layers": [16, 8], "dropout": 0.1}},
    "decisions": {"output_format": "regression", "cost_model": COST},
    "training": {"labels": {"source": "forward_return", "horizon": 20}, "loss": "huber",
                 "huber_delta": 0.01, "epochs": 4, "batch_size": 64, "learning_rate": 0.001,
                 "lr_scheduler": {"type": "step", "step_size": 2, "gamma": 0.5},
                 "early_stopping": {"patience": 10}, "seed": 7},
}


# -- metrics on a hand-checked example -----------------------------------------------------

PRED = np.array([0.25, -0.5, 0.125, 0.0, 1.0])
TRUE = np.array([0.5, -0.25, -0.125, 0.25, -1.0])


def test_regression_metrics_hand_checked() -> None:
    """errors = pred - y = [-.25, -.25, .25, -.25, 2]; with delta 0.5 Huber gives 0.03125 four
    times and 0.5 * (2 - 0.25) = 0.875 once: mean 0.2. MAE 3/5, MSE (4 * 0.0625 + 4)/5 = 0.85.
    pred > 0: T F T F T; y > 0: T F F T F: direction 2/5. Ranks [4 1 3 2 5] and [5 2 3 4 1]:
    sum d^2 = 22, Spearman 1 - 6 * 22 / (5 * 24) = -0.1. Threshold 0.2: forecasts BUY 0.25 and
    1.0, SELL -0.5; truths BUY 0.5 and 0.25, SELL -0.25 and -1.0."""
    m = regression_metrics(PRED, TRUE, loss="huber", huber_delta=0.5, threshold=0.2)
    assert m["test_loss"] == pytest.approx(0.2, abs=1e-15)
    assert m["mae"] == pytest.approx(0.6, abs=1e-15)
    assert m["rmse"] == pytest.approx(math.sqrt(0.85), abs=1e-15)
    assert m["directional_accuracy"] == pytest.approx(0.4)
    assert m["spearman_ic"] == pytest.approx(-0.1, abs=1e-12)
    assert m["signal_counts"] == {"BUY": 2, "HOLD": 2, "SELL": 1}
    assert m["actual_signal_counts"] == {"BUY": 2, "HOLD": 1, "SELL": 2}
    assert (m["threshold"], m["loss"], m["huber_delta"], m["rows"]) == (0.2, "huber", 0.5, 5)
    assert sum(b["rows"] for b in m["calibration"]) == 5
    assert [b["pred_mean"] for b in m["calibration"]] == sorted(PRED)
    assert sum(m["residuals"]["counts"]) == 5
    mse = regression_metrics(PRED, TRUE, loss="mse", huber_delta=0.5, threshold=None)
    assert mse["test_loss"] == pytest.approx(0.85, abs=1e-15)
    assert "huber_delta" not in mse and "signal_counts" not in mse
    # The test loss is the training loss itself, same delta (KTRDR's evaluation used 1.0).
    criterion = get_head("regression").criterion(
        TrainingConfig(output_format="regression", huber_delta=0.5), torch.zeros(1), 1)
    assert float(criterion(torch.tensor(PRED).reshape(-1, 1), torch.tensor(TRUE))) == \
        pytest.approx(m["test_loss"], abs=1e-15)


def test_one_sign_rule_spearman_ties_and_the_threshold_edge() -> None:
    # A zero forecast is "not up", as a zero return is: they match (KTRDR's test sign rule
    # compared sign(0) = 0 with sign(-0.1) = -1 and counted a miss).
    m = regression_metrics([0.0, 0.0], [-0.1, 0.0], loss="mse", huber_delta=1, threshold=None)
    assert m["directional_accuracy"] == 1.0
    # Average ranks for ties: x ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4].
    assert spearman(np.array([1, 2, 2, 3.0]), np.arange(4.0)) == pytest.approx(
        4.5 / math.sqrt(4.5 * 5))
    assert spearman(np.ones(4), np.arange(4.0)) == 0.0  # undefined: 0
    # Strictly beyond the threshold trades, as KTRDR's decision function.
    assert signal_counts(np.array([0.0045, -0.0045, 0.0046]), 0.0045) == {
        "BUY": 1, "HOLD": 2, "SELL": 0}


def test_regression_head_evaluates_a_model_with_one_output() -> None:
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    config = TrainingConfig(output_format="regression", huber_delta=0.5)
    test = evaluate(model, torch.tensor(PRED, dtype=torch.float32).reshape(-1, 1), TRUE,
                    device=CPU, config=config, classes=(), threshold=0.2)
    assert test["test_loss"] == pytest.approx(0.2, abs=1e-7)
    assert test["spearman_ic"] == pytest.approx(-0.1)


# -- end to end through ktrdr-daemon -------------------------------------------------------


def env() -> dict[str, str]:
    import os
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
    return {**clean, "PYTHONPATH": str(REPO), "KTRDR_CONFIG": "/nonexistent/daemon.yaml"}


def cli(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ktrdr_daemon.cli", *map(str, args)], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("regression")
    strategy = folder / "strategies" / "fr_regression.yaml"
    strategy.parent.mkdir()
    strategy.write_text(yaml.safe_dump(STRATEGY, sort_keys=False))
    done = cli("train", strategy, "--models", folder / "models", "--strategies",
               strategy.parent, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"folder": folder, "strategy": strategy, "printed": json.loads(done.stdout),
            "log": done.stdout + done.stderr}


def test_regression_trains_end_to_end_and_says_what_it_applied(trained: dict) -> None:
    printed = trained["printed"]
    assert printed["output_format"] == "regression"
    assert set(printed["signal_counts"]) == {"BUY", "HOLD", "SELL"}
    assert printed["threshold"] == pytest.approx(0.0045)
    assert "test_accuracy" not in printed and "f1" not in printed
    path = Path(printed["model_path"])
    metrics = json.loads((path / "metrics.json").read_text())
    test = metrics["test"]
    assert test["loss"] == "huber" and test["huber_delta"] == 0.01
    assert sum(test["signal_counts"].values()) == test["rows"] == \
        metrics["rows"]["EURUSD"]["test"]
    assert 0 <= test["directional_accuracy"] <= 1 and -1 <= test["spearman_ic"] <= 1
    assert test["rmse"] >= test["mae"] > 0
    # The training keys as applied, defaults included (regression: Adam without decay).
    applied = metrics["training"]["config"]
    assert applied["optimizer"] == "adam" and applied["weight_decay"] == 0.0
    assert applied["lr_scheduler"] == {"type": "step", "step_size": 2, "gamma": 0.5}
    assert applied["gradient_clip"] == 1.0 and applied["loss"] == "huber"
    history = metrics["training"]["history"]
    assert [h["learning_rate"] for h in history] == [0.001, 0.001, 0.0005, 0.0005]
    for h in history:  # a regression has no accuracy: its hit rate is the direction
        assert "train_accuracy" not in h and "val_accuracy" not in h
        assert {"train_directional_accuracy", "val_directional_accuracy", "val_mae"} <= set(h)
    best = min(history, key=lambda h: h["val_loss"])
    assert metrics["training"]["best_epoch"] == best["epoch"]
    labels = metrics["labels"]["train"]
    assert labels["rows"] == metrics["rows"]["EURUSD"]["train"] and labels["std"] > 0
    # KTRDR's fields: its regression "accuracy" is the training direction, as ours.
    assert metrics["final_train_accuracy"] == history[-1]["train_directional_accuracy"]
    assert metrics["test_accuracy"] == test["directional_accuracy"]
    log = " ".join(trained["log"].split())  # the terminal wraps long lines
    assert "adam lr 0.001, weight decay 0; lr scheduler step (step_size 2, gamma 0.5)" in log
    assert "loss huber (delta 0.01)" in log and "dir " in log and "val_mae" in log


def test_regression_version_loads_here_and_in_ktrdr_form(trained: dict) -> None:
    path = Path(trained["printed"]["model_path"])
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["output_format"] == "regression"  # as KTRDR's orchestrator writes
    assert config["decisions"]["cost_model"] == COST
    v3 = json.loads((path / "metadata_v3.json").read_text())
    assert v3["output_type"] == "regression"
    loaded = ModelStore(path.parent.parent).load(path)
    assert loaded.output_format == "regression"
    X = np.random.default_rng(3).normal(size=(32, len(loaded.features))).astype(np.float32)
    forecasts = predict(loaded, X)
    assert forecasts.dtype == np.float32 and forecasts.shape == (32,)
    with torch.no_grad():
        assert np.array_equal(forecasts, loaded.model(torch.from_numpy(X))[:, 0].numpy())
    with pytest.raises(PipelineError, match="regression model"):
        predict_proba(loaded, X)

    root = path.parent.parent
    for walk in (kp.storage_load_model(root, "fr_regression", "EURUSD", "1h"),
                 kp.live_load_model(root, "fr_regression", "EURUSD", "1h")):
        assert walk.trace == [] and isinstance(walk.model, nn.Sequential)
        assert walk.model[-1].out_features == 1
        with torch.no_grad():
            ktrdr = walk.model.eval()(torch.from_numpy(X))[:, 0].numpy()
        assert np.abs(ktrdr - forecasts).max() <= 1e-6
    bundle = kp.bundle_load(path)
    assert bundle.trace == [] and bundle.files["feature_names"] == loaded.features
    threshold = COST["round_trip_cost"] * COST["min_edge_multiplier"]
    signals = kp.decide(bundle, X)
    assert signals == ["BUY" if f > threshold else "SELL" if f < -threshold else "HOLD"
                       for f in forecasts]
    # A classification config with a one-output model.pt is refused by name.
    config["model"]["output_format"] = "classification"
    (path / "config.json").write_text(json.dumps(config))
    try:
        with pytest.raises(PipelineError, match="single output"):
            ModelStore(root).load(path)
    finally:
        config["model"]["output_format"] = "regression"
        (path / "config.json").write_text(json.dumps(config))


def test_regression_report_has_its_own_panels(trained: dict) -> None:
    path = Path(trained["printed"]["model_path"])
    assert (path / REPORT_FILE).is_file()
    data = report_data_from_version(path)
    assert data.panels() == ["loss", "direction", "calibration", "residuals", "signals",
                             "importance"]
    fig = build_report_figure(data)
    assert [ax.get_label() for ax in fig.axes] == data.panels()
    calibration = next(ax for ax in fig.axes if ax.get_label() == "calibration")
    points = calibration.get_lines()[0]
    assert list(points.get_xdata()) == [b["pred_mean"] for b in data.test["calibration"]]
    assert "direction" in data.status and "IC" in data.status
    # The direction's baseline: always guessing the test split's more frequent sign.
    test_returns = data.labels["test"]
    up = test_returns["positive"] / test_returns["rows"]
    assert data.test["baseline_direction"] == pytest.approx(max(up, 1 - up))
    assert f"(baseline {max(up, 1 - up):.3f})" in data.status
    signals = next(ax for ax in fig.axes if ax.get_label() == "signals")
    drawn = [int(t.get_text()) for t in signals.texts]  # forecast bars, then actual ones
    counts = [data.test[k][s] for k in ("signal_counts", "actual_signal_counts")
              for s in ("BUY", "HOLD", "SELL")]
    assert drawn == counts and sum(counts[:3]) == data.test["rows"]
    assert set(data.splits) == {"train", "validation", "test"}
    assert data.splits["test"]["rows"] == test_returns["rows"]


def test_features_csv_writes_the_float_label(trained: dict) -> None:
    out = trained["folder"] / "features.csv"
    done = cli("features", trained["strategy"], "--out", out, "--strategies",
               trained["strategy"].parent)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out)
    close = read_price_file(default_data_root() / "EURUSD_1h.csv")["close"].to_numpy()
    expected = forward_returns(close, 20)
    assert len(table) == len(close)
    assert np.allclose(table["label"].to_numpy()[:-20], expected[:-20], rtol=1e-14, atol=0)
    assert table["label"].iloc[-20:].isna().all()  # no future to measure: empty cells


def test_progress_files_show_a_regression_epoch_without_accuracy(tmp_path: Path) -> None:
    job_dir, tmp = tmp_path / "job", tmp_path / "tmp"
    job_dir.mkdir()
    tmp.mkdir()
    writer = ProgressWriter(job_dir, tmp, job_id="j", attempt=1, daemon="d", host="h",
                            device="cpu")
    writer({"type": "epoch", "epoch": 1, "epochs": 4, "train_loss": 3.2e-05,
            "train_directional_accuracy": 0.488, "val_loss": 6.9e-06,
            "val_directional_accuracy": 0.534, "val_mae": 0.00305, "learning_rate": 1e-3,
            "duration": 0.4, "best_epoch": 1, "best_val_loss": 6.9e-06})
    writer.files.close()
    progress = json.loads((job_dir / "progress.json").read_text())
    assert progress["metrics"] == {"train_loss": 3.2e-05, "train_directional_accuracy": 0.488,
                                   "val_loss": 6.9e-06, "val_directional_accuracy": 0.534,
                                   "val_mae": 0.00305}
    line = (job_dir / "log.txt").read_text().splitlines()[-1]
    assert line.endswith("epoch 1/4: loss 3.2e-05 dir 0.488 val_loss 6.9e-06 val_dir 0.534 "
                         "val_mae 0.00305 (0.40s)")
