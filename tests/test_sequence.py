"""Sequence models (model.type lstm and gru): windows, networks, training, evaluation, saving
in KTRDR's form and loading back, by us and along KTRDR's three loaders (tests/ktrdr_path.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import ktrdr_path as kp
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.checkpoint import IntervalCheckpoint, from_bytes, to_bytes
from pipeline.errors import Cancelled, HandedBack, StrategyError
from pipeline.evaluate import permutation_importance
from pipeline.job import load_job
from pipeline.market_data import default_data_root
from pipeline.run import run_training
from pipeline.sequence import Windows, build_recurrent, window_starts, window_targets
from pipeline.store import ModelStore, predict_proba
from pipeline.strategy import load_strategy
from pipeline.trainer import TrainingConfig, seed_everything, train_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "strategies"
LSTM_EXAMPLE = EXAMPLES / "lstm_momentum.yaml"
CPU = torch.device("cpu")


# -- windows ---------------------------------------------------------------------------------


def test_windows_stay_inside_each_segment_and_take_the_last_rows_label() -> None:
    X = torch.arange(18 * 2, dtype=torch.float32).reshape(18, 2)
    segments = [5, 3, 10]  # the middle one is shorter than a window: no window at all
    windows = Windows.over(X, 4, segments)
    assert window_starts(segments, 4).tolist() == [0, 1, 8, 9, 10, 11, 12, 13, 14]
    assert len(windows) == 9 and windows.shape == (9, 4, 2)
    every = windows[torch.arange(9)]
    for k, start in enumerate(window_starts(segments, 4).tolist()):
        assert torch.equal(every[k], X[start : start + 4])
    labels = np.arange(18) * 10
    assert window_targets(labels, segments, 4).tolist() == [30, 40, 110, 120, 130, 140, 150,
                                                           160, 170]
    floats = np.linspace(0.0, 1.0, 18)  # a regression target windows the same way
    assert np.array_equal(window_targets(floats, segments, 4), floats[[3, 4, 11, 12, 13, 14,
                                                                       15, 16, 17]])


def test_a_split_shorter_than_a_window_has_no_windows() -> None:
    windows = Windows.over(torch.randn(3, 2), 5, [3])
    assert len(windows) == 0 and windows[:].shape == (0, 5, 2)


def test_windows_are_a_view_of_the_matrix_not_copies() -> None:
    X = torch.randn(100, 3)
    windows = Windows.over(X, 10, [100])
    assert windows.view.untyped_storage().data_ptr() == X.untyped_storage().data_ptr()
    assert windows.view.stride() == (3, 3, 1)  # the next window starts one row later
    X[50, 1] = 123.0  # seen by every window that covers row 50, through the view
    assert windows[torch.tensor([41, 50])][:, :, 1].tolist()[0][9] == 123.0
    assert windows[torch.tensor([50])][0, 0, 1] == 123.0


# -- strategy files ---------------------------------------------------------------------------


def _strategy_with(tmp_path: Path, model: dict) -> Path:
    import yaml

    raw = yaml.safe_load(LSTM_EXAMPLE.read_text())
    raw["model"] = model
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sequence_length_is_required_with_its_key_path(tmp_path: Path) -> None:
    path = _strategy_with(tmp_path, {"type": "lstm", "architecture": {"hidden_size": 8}})
    with pytest.raises(StrategyError, match=r"model\.architecture\.sequence_length: required"):
        load_strategy(path)
    path = _strategy_with(tmp_path, {"type": "gru", "architecture": {"sequence_length": 20.0}})
    with pytest.raises(StrategyError, match=r"sequence_length: 20\.0 is not allowed"):
        load_strategy(path)


def test_gru_takes_ktrdr_defaults_and_warns_about_mlp_keys(tmp_path: Path) -> None:
    path = _strategy_with(tmp_path, {"type": "GRU", "architecture": {
        "sequence_length": 12, "hidden_layers": [8]}})
    strategy = load_strategy(path)
    assert strategy.model == {"type": "gru", "sequence_length": 12, "hidden_size": 64,
                              "num_layers": 2, "dropout": 0.2}
    assert any("model.architecture.hidden_layers" in w for w in strategy.warnings)


# -- networks, trainer, importance -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_network_keys_are_ktrdr_and_forward_takes_the_last_hidden_state(kind: str) -> None:
    seed_everything(0)
    ours = build_recurrent(kind, 5, 8, 2, 0.3, 6, 3).eval()
    theirs = kp.build_ktrdr_model({"type": kind, "architecture": {
        "sequence_length": 6, "hidden_size": 8, "num_layers": 2, "dropout": 0.3}}, 5).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(ours.state_dict())[0] == f"{kind}.weight_ih_l0"
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(7, 6, 5)
    assert torch.equal(ours(x), theirs(x))


def sequence_data(n: int = 400, features: int = 4, length: int = 8):
    """A label only a window can see: the sign of feature 0 summed over the window."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(n, features, generator=g)
    sums = X[:, 0].unfold(0, length, 1).sum(1)
    y = np.zeros(n, dtype=np.int64)
    y[length - 1:] = (sums > 0).long().numpy() * 2  # BUY 0 / SELL 2
    cut = int(n * 0.75)
    train = Windows.over(X[:cut], length, [cut])
    val = Windows.over(X[cut:], length, [n - cut])
    return (train, torch.from_numpy(window_targets(y[:cut], [cut], length)),
            val, torch.from_numpy(window_targets(y[cut:], [n - cut], length)))


def fresh_lstm(features: int = 4, length: int = 8) -> nn.Module:
    seed_everything(0)
    return build_recurrent("lstm", features, 12, 2, 0.2, length, 3)


class StopAfter:
    def __init__(self, k: int, reason: str) -> None:
        self.k, self.why, self.calls = k, reason, 0

    def reason(self) -> str | None:
        self.calls += 1
        return self.why if self.calls > self.k else None


def test_lstm_learns_a_window_rule() -> None:
    data = sequence_data()
    model = fresh_lstm()
    result = train_model(model, *data, TrainingConfig(25, 32, 0.01, seed=1), device=CPU)
    assert result.history[-1]["val_accuracy"] > 0.8


def test_cancel_stops_an_lstm_within_one_batch() -> None:
    events: list[dict] = []
    with pytest.raises(Cancelled):
        train_model(fresh_lstm(), *sequence_data(), TrainingConfig(3, 32, 0.01), device=CPU,
                    on_event=events.append, stop=StopAfter(4, "cancel"),
                    batch_event_interval=0.0)
    assert [e["batch"] for e in events if e["type"] == "batch"] == [1, 2, 3, 4]


@pytest.mark.parametrize("k", [5, 16])  # 10 batches an epoch: mid-epoch 1, mid-epoch 2
def test_lstm_handback_and_resume_is_bit_identical(k: int) -> None:
    data = sequence_data()
    config = TrainingConfig(3, 30, 0.01, seed=4)
    reference = fresh_lstm()
    train_model(reference, *data, config, device=CPU)
    handed: list[dict] = []
    with pytest.raises(HandedBack):
        train_model(fresh_lstm(), *data, config, device=CPU, stop=StopAfter(k, "handback"),
                    checkpoints=IntervalCheckpoint(handed.append, 3600.0))
    seed_everything(99)
    resumed = build_recurrent("lstm", 4, 12, 2, 0.2, 8, 3)
    state = from_bytes(to_bytes(handed[-1]))  # the hand-back's state, as a worker stores it
    train_model(resumed, *data, config, device=CPU, resume=state)
    a, b = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_permutation_importance_permutes_a_feature_across_all_time_steps() -> None:
    class FirstStep(nn.Module):
        """Reads feature 0 at the window's first step only: shuffling just the last step
        would find it worthless."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x[:, 0, 0:1]
            return torch.cat([v * 4, torch.zeros_like(v), -v * 4], 1)

    X = torch.randn(300, 2)
    windows = Windows.over(X, 5, [300])
    y = torch.from_numpy(np.where(windows[:][:, 0, 0].numpy() > 0, 0, 2))
    importance = permutation_importance(FirstStep(), windows, y, ["a", "b"], seed=1,
                                        device=CPU)
    assert importance["a"] > 0.5 and importance["b"] == 0.0


# -- the whole pipeline, saved in KTRDR's form -------------------------------------------------

SHORT = {"training": {"epochs": 2}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The LSTM example and a GRU variant of it on two symbols, trained through run_training."""
    root = tmp_path_factory.mktemp("models")
    jobs = {
        "lstm_momentum": {"strategy": "lstm_momentum.yaml", "overrides": SHORT},
        "gru_two_symbols": {"strategy": "lstm_momentum.yaml", "overrides": {
            **SHORT, "name": "gru_two_symbols",
            "model": {"type": "gru", "architecture": {"num_layers": 2, "hidden_size": 16}},
            "training_data": {"symbols": {"mode": "multi_symbol", "list": ["GOOG", "SP500"]},
                              "timeframes": {"mode": "single", "timeframe": "1d"},
                              "history_required": 100}}},
    }
    return {name: run_training(load_job(job, strategies_root=EXAMPLES),
                               data_root=default_data_root(), models_root=root).model_path
            for name, job in jobs.items()}


def windows_of(n_features: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.uniform(0, 1, size=(32, length, n_features)).astype(np.float32)


def probabilities(model: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(X)), 1).numpy()


@pytest.mark.parametrize("name", ["lstm_momentum", "gru_two_symbols"])
def test_ktrdr_loaders_take_our_sequence_versions(saved: dict, name: str) -> None:
    path = saved[name]
    kind = "lstm" if name.startswith("lstm") else "gru"
    meta = json.loads((path / "metadata_v3.json").read_text())
    assert meta["model_type"] == kind and isinstance(meta["sequence_length"], int)
    loaded = ModelStore(path.parent.parent).load(path)
    assert type(loaded.model).__name__ == f"{kind.upper()}Network"
    X = windows_of(len(loaded.features), meta["sequence_length"])
    expected = predict_proba(loaded, X)
    root, tf = path.parent.parent, path.name.split("_")[0]

    symbol = meta["training_symbols"][0]
    stored = kp.storage_load_model(root, name, symbol, tf)
    assert stored.trace == [] and isinstance(stored.model, torch.jit.ScriptModule)
    live = kp.live_load_model(root, name, symbol, tf)
    bundle = kp.bundle_load(path)
    assert live.trace == [] and bundle.trace == []
    for model in (stored.model.eval(), live.model, bundle.model):
        assert np.abs(probabilities(model, X) - expected).max() <= 1e-6


def test_model_full_loads_with_torch_alone(saved: dict, tmp_path: Path) -> None:
    """KTRDR's ModelStorage: torch.load(weights_only=False), in a process where importing our
    package or KTRDR's fails."""
    path = saved["lstm_momentum"]
    code = textwrap.dedent(f"""
        import sys, torch
        sys.modules["pipeline"] = sys.modules["ktrdr"] = None  # any import of them fails
        model = torch.load({str(path / "model_full.pt")!r}, map_location="cpu",
                           weights_only=False)
        print(type(model).__name__, model(torch.zeros(2, 20, 7)).shape[1])
    """)
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["RecursiveScriptModule", "3"]


def test_sequence_metrics_and_report(saved: dict) -> None:
    path = saved["gru_two_symbols"]
    metrics = json.loads((path / "metrics.json").read_text())
    rows = metrics["rows"]
    length = json.loads((path / "metadata_v3.json").read_text())["sequence_length"]
    windows = sum(max(0, r["test"] - length + 1) for r in rows.values())
    assert sum(metrics["labels"]["test"].values()) == windows  # per symbol, per split
    assert sum(metrics["test"]["class_counts"].values()) == windows
    importance = json.loads((path / "features.json").read_text())["importance"]
    assert len(importance) == 7 and any(v != 0 for v in importance.values())
    assert (path / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize("labels", [
    {"source": "triple_barrier", "compute_weights": True, "max_holding_period": 24},
    {"source": "regime"},
    {"source": "context"},
], ids=lambda labels: labels["source"])
def test_every_classification_label_source_trains_a_sequence_model(tmp_path: Path,
                                                                   labels: dict) -> None:
    """Windows take their last row's label and, with triple-barrier weights, its weight (KTRDR
    raises there: one weight per row against one sample per window)."""
    job = load_job({"strategy": "lstm_momentum.yaml", "overrides": {
        "training": {"epochs": 1, "labels": labels},
        "model": {"type": "gru", "architecture": {"sequence_length": 5}}}},
        strategies_root=EXAMPLES)
    events: list[dict] = []
    result = run_training(job, data_root=default_data_root(), models_root=tmp_path,
                          on_event=events.append)
    rows = result.metrics["rows"]["EURUSD"]
    counts = result.metrics["labels"]
    for split in ("train", "validation", "test"):
        assert sum(counts[split].values()) == rows[split] - 4  # one window per row but 4
    classes = json.loads((result.model_path / "metadata.json").read_text())["classes"]
    assert ModelStore(tmp_path).load(result.model_path).model.fc.out_features == len(classes)
    if labels.get("compute_weights"):
        assert any("drawn by uniqueness weight" in e.get("message", "") for e in events)
