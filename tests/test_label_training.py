"""Label sources through training: the purged split and weighted draws of triple barrier, a
CUSUM filter that drops feature rows with their labels, and 4-class regime models end to end
(model head, class weights, evaluation, metrics, report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.checkpoint import IntervalCheckpoint
from pipeline.dataset import SymbolData, build_dataset
from pipeline.errors import HandedBack
from pipeline.evaluate import evaluate_model
from pipeline.job import load_job
from pipeline.labels import SOURCES, pair_with_rows, purged_split
from pipeline.market_data import default_data_root, read_price_file
from pipeline.model import build_mlp
from pipeline.report import REPORT_FILE
from pipeline.run import run_training
from pipeline.store import ModelStore
from pipeline.trainer import TrainingConfig, class_weights, seed_everything, train_model

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = REPO / "config" / "strategies"
CPU = torch.device("cpu")
REGIME = ("TRENDING_UP", "TRENDING_DOWN", "RANGING", "VOLATILE")


def train_with(labels: dict, models: Path) -> tuple:
    job = load_job({"strategy": "multi_indicator.yaml",
                    "overrides": {"training": {"epochs": 2, "labels": labels,
                                               "early_stopping": None}}},
                   strategies_root=STRATEGIES)
    events: list[dict] = []
    result = run_training(job, data_root=default_data_root(), models_root=models,
                          on_event=events.append)
    return job, result, events


def substeps(events: list[dict], step: int) -> list[str]:
    return [e["message"] for e in events if e["type"] == "substep" and e["step"] == step]


def test_triple_barrier_training_uses_the_purged_split_and_weights(tmp_path: Path) -> None:
    job, result, events = train_with(
        {"source": "triple_barrier", "compute_weights": True, "max_holding_bars": 24},
        tmp_path)
    assert any("read as max_holding_period" in w for w in result.warnings)
    bars = read_price_file(default_data_root() / "EURUSD_1h.csv")
    labelled = SOURCES["triple_barrier"].label(bars, job.strategy.training["labels"])
    rows = result.metrics["rows"]["EURUSD"]
    n = rows["train"] + rows["validation"] + rows["test"] + rows["purged"]
    # Feature rows are the bars after the warm-up that have a label (all but the last 24).
    assert 4800 < n < int(labelled.valid.sum()) == 5000 - 24
    split = purged_split(n, 24, job.strategy.training["data_split"])
    assert {k: rows[k] for k in ("train", "validation", "test")} == {
        k: len(v) for k, v in split.items()}
    assert rows["purged"] == n - sum(len(v) for v in split.values()) > 0
    step6 = substeps(events, 6)
    assert any(m.startswith("training rows drawn by uniqueness weight") for m in step6)
    assert any("rows purged or embargoed" in m for m in step6)
    counts = result.metrics["labels"]["train"]
    assert set(counts) == {"BUY", "HOLD", "SELL"} and sum(counts.values()) == rows["train"]


def test_cusum_drops_feature_rows_with_their_labels(tmp_path: Path) -> None:
    job, result, events = train_with({"source": "triple_barrier", "cusum_threshold": 0},
                                     tmp_path)
    bars = read_price_file(default_data_root() / "EURUSD_1h.csv")
    labelled = SOURCES["triple_barrier"].label(bars, job.strategy.training["labels"])
    rows = result.metrics["rows"]["EURUSD"]
    kept = sum(rows.values())
    assert kept < int(labelled.valid.sum()) == 1161  # CUSUM events with a full holding window
    step5 = substeps(events, 5)[0]
    assert "rows without a label dropped" in step5 and "cusum events 1182" in step5


def test_regime_trains_a_four_class_model(tmp_path: Path) -> None:
    _, result, events = train_with({"source": "regime"}, tmp_path)
    folder = result.model_path
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    last = max(k for k in state if k.endswith(".weight"))
    assert state[last].shape[0] == 4
    test = result.metrics["test"]
    assert list(test["per_class"]) == list(REGIME)
    assert np.array(test["confusion_matrix"]).shape == (4, 4)
    assert sum(map(sum, test["confusion_matrix"])) == result.metrics["rows"]["EURUSD"]["test"]
    metadata = json.loads((folder / "metadata.json").read_text())
    v3 = json.loads((folder / "metadata_v3.json").read_text())
    assert (metadata["classes"], v3["output_type"]) == (list(REGIME), "regime_classification")
    assert metadata["architecture"]["num_classes"] == 4
    loaded = ModelStore(folder.parent.parent).load(folder)  # four logits back
    assert loaded.model(torch.zeros(2, len(loaded.features))).shape == (2, 4)
    assert (folder / REPORT_FILE).is_file()
    assert not [e for e in events if e["type"] == "warning" and REPORT_FILE in e["message"]]
    assert substeps(events, 7)[0].startswith("MLP 12 -> [64, 32] -> 4,")


def test_regime_label_j_stays_with_bar_j() -> None:
    """A regime series whose last bars have no label: the rows kept are the labelled bars, by
    timestamp (KTRDR pairs them vol_lookback rows off)."""
    bars = read_price_file(default_data_root() / "EURUSD_1h.csv").iloc[:3500]
    result = SOURCES["regime"].label(bars, SOURCES["regime"].defaults)
    unlabelled = int((~result.valid).sum())
    assert unlabelled > 0 and not result.valid[-unlabelled:].any()
    rows = bars.index[40:]
    keep, labels, _ = pair_with_rows(result, bars.index, rows)
    assert unlabelled == 17 and np.array_equal(labels, result.values[40:3500 - unlabelled])
    assert rows[keep][-1] == bars.index[3500 - unlabelled - 1]


def test_class_weights_have_one_entry_per_class_even_if_absent() -> None:
    """KTRDR sizes them by max(y_train) + 1, so a missing VOLATILE class breaks its loss."""
    weights = class_weights(torch.tensor([0, 0, 1, 2, 2, 2]), 4)
    assert weights.shape == (4,) and weights[3] == 0
    # counts 2, 1, 3: (1/n) / (1/2 + 1 + 1/3) * 4
    assert weights[:3].tolist() == pytest.approx([12 / 11, 24 / 11, 8 / 11], rel=1e-6)


def test_evaluation_reports_every_class_of_the_source() -> None:
    seed_everything(0)
    model = build_mlp(3, [4], 0.0, "relu", num_classes=4)
    X, y = torch.randn(40, 3), torch.arange(40) % 4
    report = evaluate_model(model, X, y, device=CPU, class_names=REGIME)
    assert list(report["class_counts"]) == list(REGIME)
    assert list(report["class_counts"].values()) == [10, 10, 10, 10]


def test_weighted_draws_follow_the_weights_and_resume_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(200, 5, generator=g), torch.randint(0, 3, (200,), generator=g)
    weights = torch.zeros(200, dtype=torch.float64)
    weights[:50] = 1.0  # rows 50.. can never be drawn
    config = TrainingConfig(epochs=2, batch_size=20, learning_rate=0.01, seed=4)

    class After:
        def __init__(self, k: int) -> None:
            self.k = k

        def reason(self):
            self.k -= 1
            return "handback" if self.k < 0 else None

    handed: list[dict] = []
    seed_everything(0)
    with pytest.raises(HandedBack):
        train_model(build_mlp(5, [8], 0.0, "relu"), X[:150], y[:150], X[150:], y[150:], config,
                    device=CPU, stop=After(13),
                    checkpoints=IntervalCheckpoint(handed.append, 3600.0),
                    sample_weights=weights[:150])
    draw = handed[-1]["permutation"]  # the hand-back's state
    assert len(draw) == 150 and int(draw.max()) < 50 and len(set(draw.tolist())) < 50

    seed_everything(0)
    reference = build_mlp(5, [8], 0.0, "relu")
    train_model(reference, X[:150], y[:150], X[150:], y[150:], config, device=CPU,
                sample_weights=weights[:150])
    seed_everything(9)
    resumed = build_mlp(5, [8], 0.0, "relu")
    train_model(resumed, X[:150], y[:150], X[150:], y[150:], config, device=CPU,
                resume=handed[-1], sample_weights=weights[:150])
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(),
                                                 resumed.state_dict().values(), strict=True))


def test_dataset_purges_per_symbol_and_keeps_training_weights() -> None:
    index = pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC")
    frame = pd.DataFrame({"f": np.arange(1000.0)}, index=index)
    parts = [SymbolData(s, frame, np.arange(1000) % 3, np.linspace(0.5, 1.5, 1000))
             for s in ("A", "B")]
    split = {"train": 0.7, "validation": 0.15, "test": 0.15}
    dataset = build_dataset(parts, split, {}, purge=30)
    assert dataset.rows["A"] == {"train": 671, "validation": 150, "test": 150, "purged": 29}
    assert len(dataset.train_weights) == 2 * 671
    assert dataset.X["train"][670, 0] == 670 and dataset.X["train"][671, 0] == 0  # B starts
    assert dataset.train_weights[670] == pytest.approx(0.5 + 670 / 999)
    assert build_dataset(parts, split, {}).train_weights is not None
    assert build_dataset(parts, split, {}).rows["A"] == {"train": 700, "validation": 150,
                                                          "test": 150}


def test_labels_come_from_the_base_timeframe_not_the_finest(tmp_path: Path) -> None:
    """KTRDR labels on the highest-frequency timeframe (defect 4): a 1h + 4h strategy with
    base 4h would train on 1h rows. Ours labels and trains on the 4h bars."""
    from pipeline import safe_yaml

    data = safe_yaml.load((STRATEGIES / "multi_indicator.yaml").read_text())
    data["training_data"]["timeframes"] = {"mode": "multi_timeframe", "list": ["1h", "4h"],
                                           "base_timeframe": "4h"}
    data["training"].update({"epochs": 1, "early_stopping": None,
                             "labels": {"source": "triple_barrier", "max_holding_period": 12}})
    events: list[dict] = []
    result = run_training(load_job(data), data_root=default_data_root(), models_root=tmp_path,
                          on_event=events.append)
    rows = sum(result.metrics["rows"]["EURUSD"].values())
    bars_4h = [m for m in substeps(events, 1) if m.startswith("EURUSD 4h:")][0]
    n_4h = int(bars_4h.split()[2])
    assert 1000 < n_4h < 1300 and rows < n_4h - 12  # warm-up and the last 12 bars unlabelled


def test_features_csv_leaves_unlabelled_bars_empty(tmp_path: Path) -> None:
    """`ktrdr-daemon features` on a triple-barrier strategy: the last H bars have no label."""
    from ktrdr_daemon.cli import main
    from pipeline import safe_yaml

    data = safe_yaml.load((STRATEGIES / "multi_indicator.yaml").read_text())
    data["training"]["labels"] = {"source": "triple_barrier", "max_holding_period": 30}
    strategy, out = tmp_path / "tb.yaml", tmp_path / "f.csv"
    strategy.write_text(safe_yaml.dump(data))
    assert main(["features", str(strategy), "--out", str(out),
                 "--data", str(default_data_root())]) == 0
    label = pd.read_csv(out)["label"]
    assert len(label) == 5000 and label.iloc[-30:].isna().all()
    bars = read_price_file(default_data_root() / "EURUSD_1h.csv")
    expected = SOURCES["triple_barrier"].label(bars, {**SOURCES["triple_barrier"].defaults,
                                                      "max_holding_period": 30})
    assert label.iloc[:-30].astype(int).tolist() == expected.values[:-30].tolist()
