"""LSTM and GRU jobs through the real entry points: `ktrdr-daemon train` as a process, and a
real daemon whose worker is SIGKILLed mid-training (the retry resumes to the very weights of an
uninterrupted run) or cancelled while training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from daemon_helpers import Site, job_yaml, process_gone

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LSTM_EXAMPLE = REPO / "config" / "strategies" / "lstm_momentum.yaml"


def train_cli(job: Path, models: Path, strategies: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
    env.update(PYTHONPATH=str(REPO), KTRDR_CONFIG="/nonexistent/daemon.yaml")
    return subprocess.run(
        [sys.executable, "-m", "ktrdr_daemon.cli", "train", str(job), "--models", str(models),
         "--strategies", str(strategies), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_train_command_trains_a_sequence_strategy(tmp_path: Path, kind: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"strategy": "lstm_momentum.yaml", "overrides": {
        "training": {"epochs": 2}, "model": {"type": kind}}}))
    done = train_cli(job, tmp_path / "models", LSTM_EXAMPLE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{kind.upper()} 7 x 20 bars" in done.stderr and "12. Done" in done.stderr
    version = Path(json.loads(done.stdout)["model_path"])
    state = torch.load(version / "model.pt", weights_only=True)
    assert f"{kind}.weight_ih_l0" in state and "fc.weight" in state
    assert json.loads((version / "metadata_v3.json").read_text())["sequence_length"] == 20


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    shutil.copy(LSTM_EXAMPLE, s.strategies / LSTM_EXAMPLE.name)
    yield s
    s.stop_all()


def lstm_job(epochs: int) -> str:
    return job_yaml(epochs, batch_size=16, strategy=LSTM_EXAMPLE.name)


def test_a_killed_lstm_worker_resumes_to_the_uninterrupted_weights(site: Site,
                                                                    tmp_path: Path) -> None:
    daemon = site.daemon("seq").wait_ready()
    text = lstm_job(6)
    job_id = site.drop("lstm-killed.yaml", text)
    site.wait_training(job_id, min_epoch=2)
    os.kill(daemon.worker_pid(job_id, 1), signal.SIGKILL)
    result = site.wait_result(job_id, timeout=300)
    assert result["state"] == "completed" and result["attempt"] == 2, site.explain(job_id)
    resumed = [e["resumed_from_epoch"] for e in site.events(job_id)
               if e.get("type") == "state" and e.get("resumed_from_epoch") is not None]
    assert resumed and min(resumed) >= 1  # not trained afresh

    job = tmp_path / "same.yaml"
    job.write_text(text)
    done = train_cli(job, tmp_path / "uninterrupted", site.strategies)
    assert done.returncode == 0, done.stderr[-3000:]
    alone = Path(json.loads(done.stdout)["model_path"])
    assert (alone / "model.pt").read_bytes() == (
        Path(result["model_path"]) / "model.pt").read_bytes()


def test_cancel_while_an_lstm_trains(site: Site) -> None:
    daemon = site.daemon("seq-cancel").wait_ready()
    job_id = site.drop("lstm-cancel.yaml", lstm_job(200))
    site.wait_training(job_id)
    worker = daemon.worker_pid(job_id, 1)
    started = time.monotonic()
    site.cancel(job_id)
    result = site.wait_result(job_id, timeout=30)
    assert result["state"] == "cancelled", site.explain(job_id)
    assert time.monotonic() - started < 10
    site.wait("the worker to exit", lambda: process_gone(worker), 10, job_id)
    assert site.versions(job_id) == []
