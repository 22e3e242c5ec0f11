"""Our own strategies with KTRDR's context and timeframe constructs, trained through the CLI.

KTRDR's files need data we do not bundle (EURUSD 5m, GBPUSD and USDJPY 1h, FRED, COT); the
seeded generator writes it into a temporary data root beside the real EURUSD hourly file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic_data import FIVE_MINUTES, five_minute_bars, write_data_root

from pipeline.indicators import compute_indicators
from pipeline.market_data import load_prices, read_price_file, resample_bars
from pipeline.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = REPO / "tests" / "data" / "context"
NAMES = ("carry_context", "five_minute_signal", "three_pairs")


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "ktrdr_daemon.cli", *map(str, args)]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
    return {**clean, "PYTHONPATH": str(REPO), "KTRDR_CONFIG": "/nonexistent/daemon.yaml"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data_root(tmp_path_factory.mktemp("generated") / "data")


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three strategies trained by three concurrent `ktrdr-daemon train` processes."""
    models = tmp_path_factory.mktemp("models")
    procs = {name: subprocess.Popen(
        cli("train", STRATEGIES / f"{name}.yaml", "--data", data_root, "--models", models,
            "--json"), cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for name in NAMES}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err[-3000:])
        assert json.loads(out)["model_path"]
    return models


def version(models: Path, name: str) -> Path:
    return models / f"{name}_test" / "1h_v1"


def test_generated_5m_bars_resample_to_the_hourly_file(data_root: Path) -> None:
    hourly = read_price_file(data_root / "EURUSD_1h.csv")
    five = read_price_file(data_root / "EURUSD_5m.csv")
    assert len(five) == FIVE_MINUTES * len(hourly)
    pd.testing.assert_frame_equal(resample_bars(five, "1h", source_timeframe="5m"), hourly,
                                  check_freq=False)
    again = five_minute_bars(hourly, seed=7)
    assert np.array_equal(again.to_numpy(), five.to_numpy())  # seeded: the same bars again
    assert not np.array_equal(five_minute_bars(hourly, seed=8).to_numpy(), five.to_numpy())


def test_context_strategy_trains_and_saves_ktrdr_context_metadata(trained: Path) -> None:
    folder = version(trained, "carry_context")
    meta = json.loads((folder / "metadata_v3.json").read_text())
    raw = yaml.safe_load((STRATEGIES / "carry_context.yaml").read_text())
    assert meta["context_data_config"] == raw["context_data"]
    assert meta["context_source_ids"] == [
        "GBPUSD", "fred_DGS2", "fred_IRLTLT01DEM156N", "yield_spread_DGS2_IRLTLT01DEM156N",
        "cot_EUR_net_pos", "cot_EUR_net_pct"]
    assert meta["indicators"]["cot_pct_ema"]["data_source"] == "cot_EUR_net_pct"
    assert "1h_cot_net_sma_raw" in meta["resolved_features"]
    assert ModelStore(trained).load(folder).metadata["strategy"] == "carry_context_test"


def test_a_strategy_without_context_saves_none(trained: Path) -> None:
    meta = json.loads((version(trained, "three_pairs") / "metadata_v3.json").read_text())
    assert meta["context_data_config"] is None and meta["context_source_ids"] == []
    assert meta["training_symbols"] == ["EURUSD", "GBPUSD", "USDJPY"]


def test_five_minute_inputs_on_hourly_rows(trained: Path, data_root: Path,
                                           tmp_path: Path) -> None:
    meta = json.loads((version(trained, "five_minute_signal") / "metadata_v3.json").read_text())
    assert meta["resolved_features"][:4] == ["5m_rsi_momentum_low", "5m_rsi_momentum_high",
                                             "1h_rsi_momentum_low", "1h_rsi_momentum_high"]
    out = tmp_path / "features.csv"
    done = subprocess.run(cli("features", STRATEGIES / "five_minute_signal.yaml", "--data",
                              data_root, "--out", out), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out, index_col="timestamp")
    assert len(table) == 5000  # one row per hourly bar
    five = load_prices(data_root, "EURUSD", "5m")
    rsi = compute_indicators(five, {"rsi_14": {"type": "rsi", "period": 14}})["rsi_14"]
    # The 10:00 row (closes 11:00) sees the 5m bar that closed with it: the one at 10:55.
    at_close = rsi.set_axis(five.index - pd.Timedelta(minutes=55))
    rows = pd.DatetimeIndex(table.index).tz_localize(None).tz_localize("UTC")
    expected = at_close.reindex(rows).to_numpy()
    got = table["5m_rsi_14"].to_numpy()
    assert np.allclose(got[20:], expected[20:], rtol=0, atol=1e-9)


def test_missing_context_file_fails_the_run_naming_it(data_root: Path, tmp_path: Path) -> None:
    partial = tmp_path / "data"
    partial.mkdir()
    for name in ("EURUSD_1h.csv", "GBPUSD_1h.csv"):
        (partial / name).write_bytes((data_root / name).read_bytes())
    done = subprocess.run(cli("train", STRATEGIES / "carry_context.yaml", "--data", partial,
                              "--models", tmp_path / "m"), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "context_data[1] (fred): missing file" in done.stderr
    assert "fred/DGS2.csv; add it as a CSV with columns date,value" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").rglob("*.pt"))
