"""Models cross over: KTRDR's loaders take what we save, our store takes what KTRDR saves.

KTRDR is not installed here: ``tests/ktrdr_path.py`` walks its loaders' code path step by
step. The KTRDR-written fixture under ``tests/data/interchange/ktrdr_written`` was produced by
KTRDR's own v3 training code run from source (see the README beside it), with the predictions
KTRDR's own model made; ``ours_before_14`` is a version saved by this project before issue 14.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import ktrdr_path as kp
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.job import load_job
from pipeline.ktrdr_files import version_documents
from pipeline.market_data import default_data_root
from pipeline.run import run_training
from pipeline.store import ModelStore, predict_proba
from pipeline.strategy import load_strategy

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "strategies"
DATA = REPO / "tests" / "data" / "interchange"
KTRDR_ROOT = DATA / "ktrdr_written"
KTRDR_FIELDS = {  # ModelMetadata.to_dict, all of them
    "model_name", "strategy_name", "created_at", "strategy_version", "indicators", "fuzzy_sets",
    "nn_inputs", "resolved_features", "training_symbols", "training_timeframes",
    "training_metrics", "output_type", "model_type", "sequence_length", "normalization_params",
    "context_data_config", "context_source_ids"}
SHORT = {"training": {"epochs": 2}, "model": {"architecture": {"hidden_layers": [8, 4]}}}


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two versions saved by the real pipeline: raw inputs with both scalings (1h), and a
    multi-timeframe model whose timeframe list does not start with its base."""
    root = tmp_path_factory.mktemp("models")
    jobs = {
        "multi_indicator": {"strategy": "multi_indicator.yaml", "overrides": SHORT},
        "multi_timeframe": {"strategy": "multi_timeframe.yaml", "overrides": {
            **SHORT, "training_data": {"timeframes": {
                "mode": "multi_timeframe", "list": ["4h", "1h"], "base_timeframe": "1h"}}}},
    }
    out = {}
    for name, job in jobs.items():
        result = run_training(load_job(job, strategies_root=EXAMPLES),
                              data_root=default_data_root(), models_root=root)
        out[name] = result.model_path
    return out


def rows(n_features: int) -> np.ndarray:
    return np.random.default_rng(5).uniform(-2, 2, size=(64, n_features)).astype(np.float32)


def probabilities(model: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(X)), 1).numpy()


def assert_same(ktrdr_probs: np.ndarray, our_probs: np.ndarray) -> None:
    assert np.abs(ktrdr_probs - our_probs).max() <= 1e-6
    assert np.array_equal(ktrdr_probs.argmax(1), our_probs.argmax(1))


@pytest.mark.parametrize("name", ["multi_indicator", "multi_timeframe"])
def test_ktrdr_loaders_take_our_versions_on_their_main_path(ours: dict, name: str) -> None:
    path = ours[name]
    loaded = ModelStore(path.parent.parent).load(path)
    X = rows(len(loaded.features))
    expected = predict_proba(loaded, X)
    root, symbol, tf = path.parent.parent, "EURUSD", path.name.split("_")[0]

    stored = kp.storage_load_model(root, name, symbol, tf)
    assert stored.trace == [] and isinstance(stored.model, nn.Sequential)  # a module, no dict
    assert_same(probabilities(stored.model.eval(), X), expected)

    live = kp.live_load_model(root, name, symbol, tf)
    assert live.trace == []
    assert_same(probabilities(live.model, X), expected)

    bundle = kp.bundle_load(path)
    assert bundle.trace == []  # no default architecture, no UNKNOWN symbol, no unscaled input
    assert bundle.files["feature_names"] == loaded.features
    assert_same(probabilities(bundle.model, X), expected)


def test_model_files_use_ktrdr_key_names_and_torch_classes_only(ours: dict) -> None:
    path = ours["multi_indicator"]
    state = torch.load(path / "model.pt", weights_only=True)
    config = json.loads((path / "config.json").read_text())
    size = json.loads((path / "features.json").read_text())["feature_count"]
    assert list(state) == list(kp.build_ktrdr_mlp(config["model"], size).state_dict())
    assert list(state)[0] == "0.weight"
    with zipfile.ZipFile(path / "model_full.pt") as archive:
        pickled = b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    assert b"torch.nn.modules" in pickled and b"pipeline" not in pickled


def test_metadata_v3_has_ktrdr_fields_and_shapes(ours: dict) -> None:
    meta = json.loads((ours["multi_timeframe"] / "metadata_v3.json").read_text())
    assert set(meta) >= KTRDR_FIELDS
    assert meta["training_timeframes"] == ["1h", "4h"]  # base first, as KTRDR aligns on [0]
    assert meta["output_type"] == "classification" and meta["model_type"] == "mlp"
    assert meta["sequence_length"] is None and meta["context_source_ids"] == []
    assert datetime.fromisoformat(meta["created_at"]).utcoffset().total_seconds() == 0
    assert meta["fuzzy_sets"]["rsi_zone"] == {
        "indicator": "rsi_14",
        "oversold": {"type": "triangular", "parameters": [0.0, 25.0, 45.0]},
        "neutral": {"type": "triangular", "parameters": [35.0, 50.0, 65.0]},
        "overbought": {"type": "triangular", "parameters": [55.0, 75.0, 100.0]}}
    assert meta["training_metrics"]["epochs_trained"] == 2

    mi = ours["multi_indicator"]
    meta = json.loads((mi / "metadata_v3.json").read_text())
    params = meta["normalization_params"]
    fitted = json.loads((mi / "features.json").read_text())["normalization"]
    assert params == fitted and set(params) == {
        "1h_macd_12_26_9.histogram_raw", "1h_adx_14.plus_di_raw", "1h_adx_14.minus_di_raw"}
    assert params["1h_macd_12_26_9.histogram_raw"]["method"] == "zscore"
    assert set(params["1h_adx_14.plus_di_raw"]) == {"method", "min", "max"}
    assert ModelStore(mi.parent.parent).load(mi).normalization == fitted


def test_listing_fields_and_a_shared_root(ours: dict, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(ours["multi_indicator"].parent, root / "multi_indicator", symlinks=True)
    shutil.copytree(KTRDR_ROOT / "ktrdr_trained_mi", root / "ktrdr_trained_mi", symlinks=True)
    # litter of a crashed write: a whole version inside .staging must stay invisible to KTRDR
    shutil.copytree(ours["multi_indicator"], root / ".staging" / "crashed" / "version")
    listed = {m["strategy_name"]: m for m in kp.list_models(root)}
    assert set(listed) == {"multi_indicator", "ktrdr_trained_mi"}
    assert listed["multi_indicator"]["symbol"] == "EURUSD"
    assert listed["multi_indicator"]["timeframe"] == "1h"
    assert 0 < listed["multi_indicator"]["accuracy"] <= 1
    metrics = json.loads((ours["multi_indicator"] / "metrics.json").read_text())
    assert listed["multi_indicator"]["accuracy"] == metrics["best_val_accuracy"]
    assert metrics["test_accuracy"] == metrics["test"]["test_accuracy"]  # KTRDR's host form

    heads = {v.strategy: v.headline for v in ModelStore(root).versions()}
    assert heads["ktrdr_trained_mi"]["best_val_accuracy"] == pytest.approx(0.656000018119812)
    assert heads["ktrdr_trained_mi"]["test_accuracy"] is None  # KTRDR's local path saves none
    assert heads["multi_indicator"]["test_accuracy"] == metrics["test"]["test_accuracy"]
    done = subprocess.run(
        [sys.executable, "-m", "ktrdr_daemon.cli", "models", "--json", "--models", str(root),
         "--strategies", str(tmp_path / "none")], capture_output=True, text=True, timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")},
             "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = {row["strategy"]: row for row in json.loads(done.stdout)}
    ktrdr_row = printed["ktrdr_trained_mi"]["versions"][0]
    assert ktrdr_row["best_val_accuracy"] == pytest.approx(0.656000018119812)
    assert printed["multi_indicator"]["versions"][0]["f1"] == metrics["test"]["f1"]


def test_our_store_loads_a_ktrdr_trained_version_unedited(tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(KTRDR_ROOT / "ktrdr_trained_mi", root / "ktrdr_trained_mi", symlinks=True)
    expected = json.loads((KTRDR_ROOT / "expected.json").read_text())
    loaded = ModelStore(root).load(root / "ktrdr_trained_mi" / "1h_latest")
    meta = json.loads((root / "ktrdr_trained_mi/1h_v1/metadata_v3.json").read_text())
    assert loaded.features == meta["resolved_features"] == expected["resolved_features"]
    assert loaded.metadata["input_size"] is None  # KTRDR writes null; taken from features.json
    assert loaded.normalization == {}  # KTRDR fits none: its raw inputs are unscaled
    X = np.array(expected["rows"], dtype=np.float32)
    assert_same(predict_proba(loaded, X), np.array(expected["probabilities"]))


def test_ktrdr_path_loaders_take_ktrdr_own_version() -> None:
    """The step-by-step loaders are no stricter than KTRDR: its own version loads, and the one
    fallback it takes is KTRDR's own gap (no normalization_params for raw inputs)."""
    expected = json.loads((KTRDR_ROOT / "expected.json").read_text())
    X = np.array(expected["rows"], dtype=np.float32)
    stored = kp.storage_load_model(KTRDR_ROOT, "ktrdr_trained_mi", "EURUSD", "1h")
    assert stored.trace == [] and isinstance(stored.model, nn.Sequential)
    live = kp.live_load_model(KTRDR_ROOT, "ktrdr_trained_mi", "EURUSD", "1h")
    bundle = kp.bundle_load(KTRDR_ROOT / "ktrdr_trained_mi" / "1h_v1")
    assert bundle.trace == [f"no normalization_params for {f}: raw values fed unscaled"
                            for f in ("1h_macd_12_26_9.histogram_raw", "1h_adx_14.plus_di_raw",
                                      "1h_adx_14.minus_di_raw")]
    for model in (stored.model.eval(), live.model, bundle.model):
        assert_same(probabilities(model, X), np.array(expected["probabilities"]))


def test_a_version_saved_before_issue_14_still_loads() -> None:
    folder = DATA / "ours_before_14" / "old_format_mi" / "1h_v1"
    expected = json.loads((DATA / "ours_before_14" / "expected.json").read_text())
    assert next(iter(torch.load(folder / "model.pt", weights_only=True))) == "network.0.weight"
    loaded = ModelStore(folder.parent.parent).load(folder)
    assert loaded.features == expected["features"]
    with torch.no_grad():
        logits = loaded.model(torch.tensor(expected["rows"])).numpy()
    assert np.abs(logits - np.array(expected["logits"])).max() <= 1e-6


def test_an_unsupported_ktrdr_model_type_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "m" / "ktrdr_trained_mi" / "1h_v1"
    shutil.copytree(KTRDR_ROOT / "ktrdr_trained_mi" / "1h_v1", folder)
    meta = json.loads((folder / "metadata_v3.json").read_text())
    (folder / "metadata_v3.json").write_text(json.dumps({**meta, "model_type": "transformer"}))
    with pytest.raises(PipelineError, match="'transformer' cannot be loaded here yet"):
        ModelStore(tmp_path / "m").load(folder)


def test_multi_symbol_documents_name_the_symbols_as_ktrdr_does() -> None:
    strategy = load_strategy(EXAMPLES / "multi_symbol.yaml")
    history = [{"train_loss": 1.0, "train_accuracy": 0.4, "val_loss": 1.1,
                "val_accuracy": 0.5, "duration": 0.5},
               {"train_loss": 0.9, "train_accuracy": 0.6, "val_loss": 1.2,
                "val_accuracy": 0.45, "duration": 0.5}]
    docs = version_documents(strategy=strategy, names=["a"], normalization={}, importance={},
                             history=history, test={"test_accuracy": 0.3, "f1": 0.2},
                             metrics={}, metadata={}, created_at=datetime(2026, 1, 2))
    assert docs["metadata"]["symbol"] == "MULTI"
    assert docs["metadata_v3"]["training_symbols"] == ["SP500", "NASDAQ"]
    summary = docs["metadata_v3"]["training_metrics"]
    assert summary["best_val_accuracy"] == 0.5 and summary["final_val_accuracy"] == 0.45
    assert summary["training_time"] == 1.0 and summary["history"]["val_loss"] == [1.1, 1.2]
    assert docs["metadata"]["training_summary"] == {
        "epochs": 2, "final_accuracy": 0.6, "best_val_accuracy": 0.5}
    assert docs["metrics"]["f1_score"] == 0.2
    assert docs["config"]["model"]["architecture"]["activation"] == "relu"


def test_the_walk_refuses_a_version_saved_before_issue_14() -> None:
    """What KTRDR did with our versions before (issue 14), the walk does too: no test above
    could pass on the old files."""
    root = DATA / "ours_before_14"
    stored = kp.storage_load_model(root, "old_format_mi", "EURUSD", "1h")
    assert isinstance(stored.model, dict)  # model_full.pt pickled a class of ours
    assert any("model_full.pt unusable" in step for step in stored.trace)
    with pytest.raises(RuntimeError, match='Missing key.*"0.weight"'):
        kp.live_load_model(root, "old_format_mi", "EURUSD", "1h")
    with pytest.raises(KeyError, match="model_name"):
        kp.bundle_load(root / "old_format_mi" / "1h_v1")
