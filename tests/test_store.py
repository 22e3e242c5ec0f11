"""Model store with real files and real processes: concurrent writers, withdrawal, loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.model import build_mlp
from pipeline.store import FILES, ModelStore, predict

REPO = Path(__file__).resolve().parents[1]
FEATURES = ["rsi_low", "rsi_high", "macd"]


def save(store: ModelStore, model=None, **overrides) -> Path:
    if model is None:
        torch.manual_seed(0)
        model = build_mlp(3, [8, 4], 0.1, "tanh")
    kwargs = dict(
        strategy_name="rsi", base_timeframe="1h", model=model,
        config={"name": "rsi", "model": {"architecture": {"hidden_layers": [8, 4]}}},
        metrics={"test_accuracy": 0.5, "nan": float("nan")},
        features={"feature_names": FEATURES, "importance": {f: 0.1 for f in FEATURES}},
        metadata={"symbols": ["EURUSD"], "device": "cpu", "seed": 0, "job_id": "j1"},
        metadata_v3={"resolved_features": FEATURES},
    )  # fmt: skip
    kwargs.update(overrides)
    return store.save(**kwargs)


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_complete(folder: Path) -> None:
    for name in FILES:
        assert (folder / name).is_file(), f"{folder / name} missing"
    for name in FILES:
        if name.endswith(".json"):
            json.loads((folder / name).read_text())
    torch.load(folder / "model.pt", weights_only=True)


def test_save_layout_and_metadata(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first, second = save(store), save(store)
    assert (first.name, second.name) == ("1h_v1", "1h_v2")
    link = tmp_path / "rsi" / "1h_latest"
    assert link.is_symlink() and os.readlink(link) == "1h_v2"  # relative
    assert_complete(second)
    meta = json.loads((second / "metadata.json").read_text())
    assert meta["is_trained"] is True and meta["created_at"].endswith("Z")
    assert meta["torch_version"] == torch.__version__ and meta["input_size"] == 3
    assert meta["architecture"]["hidden_layers"] == [8, 4] and meta["job_id"] == "j1"
    assert json.loads((second / "metrics.json").read_text())["nan"] is None  # strict JSON
    state = torch.load(second / "model.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())
    assert [v.version for v in store.versions()] == [1, 2]
    assert store.is_trained("rsi") and not store.is_trained("other")


def test_concurrent_writers_in_two_processes(tmp_path: Path) -> None:
    go = tmp_path / "go"
    writer = f"""
        import sys, time, torch
        from pathlib import Path
        from pipeline.model import build_mlp
        from pipeline.store import ModelStore
        store = ModelStore(Path({str(tmp_path / "models")!r}))
        model = build_mlp(3, [8], 0.0, "relu")
        Path({str(tmp_path)!r}, "ready-" + sys.argv[1]).touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.002)
        start = time.time()
        for i in range(12):
            store.save(strategy_name="rsi", base_timeframe="1h", model=model, config={{}},
                       metrics={{"i": i}}, features={{"feature_names": ["a", "b", "c"]}},
                       metadata={{}}, metadata_v3={{}})
        print(start, time.time())
        """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(writer), str(i)], env=env,
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both have imported torch: release them together
    go.touch()
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        spans.append([float(t) for t in out.split()])
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, "the writers did not overlap in time"

    store = ModelStore(tmp_path / "models")
    versions = store.versions()
    assert [v.version for v in versions] == list(range(1, 25))
    for v in versions:
        assert_complete(v.path)
    assert os.readlink(tmp_path / "models" / "rsi" / "1h_latest") == "1h_v24"
    assert os.listdir(tmp_path / "models" / ".staging") == []
    assert sorted(os.listdir(tmp_path / "models" / "rsi")) == sorted(
        [f"1h_v{n}" for n in range(1, 25)] + ["1h_latest"]
    )


def test_before_publish_raising_publishes_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    def withdraw() -> None:
        raise RuntimeError("claim lost")

    with pytest.raises(RuntimeError, match="claim lost"):
        save(store, before_publish=withdraw)
    assert store.versions() == [] and not store.is_trained("rsi")
    assert os.listdir(tmp_path / ".staging") == []
    assert not (tmp_path / "rsi" / "1h_latest").is_symlink()
    seen: list[bool] = []
    path = save(store, before_publish=lambda: seen.append(True))
    assert seen == [True] and path.name == "1h_v1"


def test_load_in_fresh_process_never_unpickles(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_mlp(3, [8, 4], 0.1, "tanh")
    path = save(ModelStore(tmp_path), model=model)
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(X)).argmax(1).tolist()
    np.save(tmp_path / "X.npy", X)
    (path / "model_full.pt").unlink()  # the pickled module must not be needed
    result = run_python(f"""
        import json, pickle
        import numpy as np
        class NoPickle:
            def __init__(self, *args, **kwargs):
                raise AssertionError("pickle was used to load a model")
        pickle.Unpickler = NoPickle
        pickle.load = pickle.loads = NoPickle
        from pathlib import Path
        from pipeline.store import ModelStore, predict
        loaded = ModelStore(Path({str(tmp_path)!r})).load(Path({str(tmp_path)!r}) / "rsi/1h_latest")
        assert not loaded.model.training
        X = np.load({str(tmp_path / "X.npy")!r}, allow_pickle=False)
        print(json.dumps({{"pred": predict(loaded, X).tolist(), "features": loaded.features,
                          "path": str(loaded.path)}}))
        """)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["pred"] == expected
    assert out["features"] == FEATURES and out["path"] == str(path.resolve())


def test_the_pickle_guard_would_catch_a_pickle_load(tmp_path: Path) -> None:
    path = save(ModelStore(tmp_path))
    result = run_python(f"""
        import pickle, torch
        class NoPickle:
            def __init__(self, *args, **kwargs):
                raise AssertionError("pickle was used")
        pickle.Unpickler = NoPickle
        torch.load({str(path / "model_full.pt")!r}, weights_only=False)
        """)  # fmt: skip
    assert result.returncode != 0 and "pickle was used" in result.stderr


def test_load_in_process_matches_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    torch.manual_seed(1)
    model = build_mlp(3, [8, 4], 0.1, "tanh").eval()
    loaded = store.load(save(store, model=model))
    X = np.random.default_rng(1).normal(size=(20, 3))
    with torch.no_grad():
        expected = model(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()
    assert np.array_equal(predict(loaded, X), expected)
    assert loaded.metadata["symbols"] == ["EURUSD"] and loaded.metrics["test_accuracy"] == 0.5
    assert loaded.config["name"] == "rsi"


def test_delete_repairs_latest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    v1, v2, v3 = save(store), save(store), save(store)
    link = tmp_path / "rsi" / "1h_latest"
    store.delete(link)  # deleting through the link deletes v3
    assert not v3.exists() and os.readlink(link) == "1h_v2"
    store.delete(v1)
    assert os.readlink(link) == "1h_v2" and [v.version for v in store.versions()] == [2]
    assert save(store).name == "1h_v3"  # numbering goes on from the highest left
    store.delete(v2)
    store.delete(tmp_path / "rsi" / "1h_v3")
    assert not link.is_symlink() and not store.is_trained("rsi")
    assert os.listdir(tmp_path / ".staging") == []
    with pytest.raises(PipelineError, match="not a saved model version"):
        store.delete(tmp_path / "rsi")


def test_unsafe_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="cannot name a model-store folder"):
        save(ModelStore(tmp_path), strategy_name="../evil")
    with pytest.raises(PipelineError, match="cannot name"):
        save(ModelStore(tmp_path), base_timeframe=".staging")


def test_provenance_dates_are_the_asked_range_else_the_bars_seen(tmp_path: Path) -> None:
    """`models` shows a version's date range: the job's start/end when it gave them, else (all
    the data) the first train bar and the last test bar its metrics recorded, never "-..-"."""
    from pipeline.versions import VersionInfo

    splits = {"train": {"rows": 9, "first": "2017-04-19T00:00:00+00:00", "last": "x"},
              "test": {"rows": 3, "first": "y", "last": "2018-02-07T23:00:00+00:00"}}
    whole = VersionInfo("s", "1h", 1, tmp_path, {"splits": splits}, None).provenance
    assert (whole["start_date"], whole["end_date"]) == ("2017-04-19", "2018-02-07")
    asked = VersionInfo("s", "1h", 2, tmp_path, {"splits": splits, "start_date": "2017-05-01",
                                                 "end_date": "2018-01-31"}, None).provenance
    assert (asked["start_date"], asked["end_date"]) == ("2017-05-01", "2018-01-31")
    old = VersionInfo("s", "1h", 3, tmp_path, {}, None).provenance  # written before splits
    assert (old["start_date"], old["end_date"]) == (None, None)
