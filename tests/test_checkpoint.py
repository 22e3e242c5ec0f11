"""Checkpoints: the interval policy, the torch.save format read back safely, the worker's file.

The last test is the crash case itself: a training process SIGKILLed after a checkpoint its
time interval took mid-run, resumed in another process, ends with the weights, to the bit, of a
run that was never stopped.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from ktrdr_daemon import spool as sp
from ktrdr_daemon.file_writer import FileWriter
from ktrdr_daemon.worker import CHECKPOINT, CHECKPOINT_FILE, checkpoint_saver, load_checkpoint
from pipeline.checkpoint import IntervalCheckpoint, describe_resume, from_bytes, to_bytes
from pipeline.model import build_mlp
from pipeline.trainer import CHECKPOINT_VERSION, TrainingConfig, check_checkpoint, train_model

REPO = Path(__file__).resolve().parents[1]


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Equal values of equal types all the way down; tensors equal to the bit."""
    assert type(a) is type(b), where
    if isinstance(a, Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN is NaN


def train_with_checkpoints(epochs: int = 3, every: float = 0.0, **kwargs: Any) -> list[dict]:
    torch.manual_seed(0)
    X, y = torch.randn(200, 6), torch.arange(200) % 3
    states: list[dict] = []
    train_model(build_mlp(6, [16, 8], 0.1, "relu"), X[:150], y[:150], X[150:], y[150:],
                TrainingConfig(epochs, 16, 0.01, seed=1), device=torch.device("cpu"),
                checkpoints=IntervalCheckpoint(states.append, every, **kwargs))
    return states


# -- the policy ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_interval_policy_saves_at_most_every_n_seconds_and_always_when_forced() -> None:
    clock, saved = Clock(), []
    policy = IntervalCheckpoint(saved.append, 5.0, clock=clock)
    for now in (100.0, 103.0, 104.9, 105.0, 106.0, 109.9, 111.0):
        clock.now = now
        policy.on_batch_end(lambda at=now: {"at": at})
    # The first batch starts the clock (at 100); due at 105, then 5 s after that save.
    assert [s["at"] for s in saved] == [105.0, 111.0]
    clock.now = 111.5
    policy.on_handback(lambda: {"at": "handback"})
    policy.on_train_end(lambda: {"at": "end"})
    assert [s["at"] for s in saved][2:] == ["handback", "end"]
    snapshots = []  # nothing is copied unless a save is due
    policy.on_batch_end(lambda: snapshots.append(1) or {})
    assert snapshots == [] and len(saved) == 4
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="interval"):
            IntervalCheckpoint(saved.append, bad)


def test_an_interval_longer_than_training_saves_once_at_the_end() -> None:
    states = train_with_checkpoints(3, every=3600.0)
    assert [(s["epoch"], s["batch"]) for s in states] == [(3, 0)]
    assert [h["epoch"] for h in states[0]["history"]] == [1, 2, 3]


# -- the format -----------------------------------------------------------------------------


def test_a_training_state_round_trips_bit_for_bit_and_is_a_copy() -> None:
    """Every value comes back with its type (tuples, int keys, inf, None), every tensor to the
    bit; and a state is a copy: training on after it was taken does not change it."""
    written: list[tuple[dict, bytes]] = []
    torch.manual_seed(0)
    X, y = torch.randn(200, 6), torch.arange(200) % 3
    policy = IntervalCheckpoint(lambda s: written.append((s, to_bytes(s))), 0.0)
    train_model(build_mlp(6, [16, 8], 0.1, "relu"), X[:150], y[:150], X[150:], y[150:],
                TrainingConfig(2, 16, 0.01, seed=1, early_stopping={"patience": 9,
                                                                   "min_delta": 0.0}),
                device=torch.device("cpu"), checkpoints=policy)
    assert len(written) == 2 * 10  # 10 batches an epoch: 9 batch ends, the epoch's, the end
    for state, data in (written[0], written[14], written[-1]):  # before, mid- and at the end
        back = from_bytes(data)
        assert_same(back, state)  # the live state then == the file == the state now
        check_checkpoint(back)
    first = written[0][0]
    assert first["version"] == CHECKPOINT_VERSION and first["best_model"] is None
    assert first["permutation"] is not None and first["history"] == []
    assert isinstance(first["optimizer"]["param_groups"][0]["betas"], tuple)
    assert first["progress"]["best_val_loss"] == float("inf")
    # 3 layers: weights and biases; Adam's step and two moments for each.
    assert len(first["model"]) == 6 and len(first["optimizer"]["state"]) == 6
    assert set(first["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    last = written[-1][0]
    assert not torch.equal(first["model"]["network.0.weight"], last["model"]["network.0.weight"])


def test_a_torn_corrupted_or_forged_file_is_refused_and_nothing_in_it_runs(
        tmp_path: Path) -> None:
    state = train_with_checkpoints(1)[-1]
    data = to_bytes(state)
    cuts = sorted({*range(0, len(data), max(1, len(data) // 60)), *range(len(data) - 40,
                                                                          len(data))})
    for cut in cuts:  # torn anywhere: refused
        with pytest.raises(ValueError, match="not a readable checkpoint"):
            from_bytes(data[:cut])
    assert len(cuts) > 90
    # Blocks left zeroed (a power loss after the rename) or flipped: the zip's CRC-32 says so.
    start = data.index(state["model"]["network.0.weight"].numpy().tobytes())
    for damage in (bytes(64), b"\xff"):
        broken = data[:start + 8] + damage + data[start + 8 + len(damage):]
        with pytest.raises(ValueError, match="CRC"):
            from_bytes(broken)

    marker = tmp_path / "ran"

    class Payload:  # what a forged pickle does: name a function to call when loaded
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, "model": Payload()}, buffer)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        from_bytes(buffer.getvalue())
    assert not marker.exists()
    foreign = [b"", b"KTRDR-C1" + bytes(40), json.dumps({"version": 4}).encode(),
               os.urandom(4096)]
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    foreign.append(archive_bytes.getvalue())
    for other in foreign:
        with pytest.raises(ValueError):
            from_bytes(other)


def test_a_readable_state_of_another_shape_or_version_is_refused() -> None:
    state = train_with_checkpoints(1)[-1]
    check_checkpoint(state)
    for changed in ({"version": 3}, {"epoch": -1}, {"batch": "0"}, {"model": {"w": 1.0}},
                    {"rng": {"generator": None}}, {"history": "[]"}, {"optimizer": []},
                    {"progress": {**state["progress"], "seen": 1.5}}):
        with pytest.raises(ValueError):
            check_checkpoint({**state, **changed})
    with pytest.raises(ValueError, match="version"):
        check_checkpoint([state])


# -- the worker's file ------------------------------------------------------------------------


def test_worker_checkpoint_files_roundtrip_and_foreign_ones_are_ignored(tmp_path: Path) -> None:
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    job_dir = spool.jobs / "job"
    job_dir.mkdir()
    state = train_with_checkpoints(2, every=3600.0)[-1]
    files = FileWriter(spool.tmp)
    checkpoint_saver(files, job_dir)(state)
    files.close()
    path = job_dir / CHECKPOINT / CHECKPOINT_FILE
    assert CHECKPOINT_FILE == "last.pt" and path.is_file()
    assert_same(load_checkpoint(job_dir), state)
    assert not list(spool.tmp.iterdir())  # the temporary file was renamed into place

    warnings: list[dict] = []
    path.write_bytes(to_bytes({**state, "version": CHECKPOINT_VERSION - 1}))  # an older daemon
    assert load_checkpoint(job_dir, warnings.append) is None  # type: ignore[arg-type]
    path.write_bytes(path.read_bytes()[:-100])  # torn
    assert load_checkpoint(job_dir, warnings.append) is None  # type: ignore[arg-type]
    path.unlink()
    # The files older versions left, alone in the folder: reported, and training starts over.
    for old in ("state.ckpt", "state.pt"):
        (path.parent / old).write_bytes(b"KTRDR-C1 the hand-written format"
                                        if old == "state.ckpt" else b"PK\x03\x04 torch.save")
        assert load_checkpoint(job_dir, warnings.append) is None  # type: ignore[arg-type]
        (path.parent / old).unlink()
    assert [w["type"] for w in warnings] == ["warning"] * 4
    assert "version 3" in warnings[0]["message"] and "starting over" in warnings[1]["message"]
    assert "not a readable checkpoint" in warnings[1]["message"]
    for warning, old in zip(warnings[2:], ("state.ckpt", "state.pt"), strict=True):
        assert old in warning["message"] and "another version" in warning["message"]


# -- SIGKILL after a mid-run interval checkpoint, resumed in another process ------------------

# A training run with the worker's own pieces: checkpoints at most every 0.2 s, saved by the
# file thread to <job>/checkpoint/last.pt. "train" trains until killed; "resume" loads that
# file, trains to the end, then trains a fresh model the whole way (the reference), and saves
# both sets of weights. One torch thread in both processes: bit-identical results need it.
EPOCHS = 100
_SCRIPT = """
import sys
from pathlib import Path
import torch
from ktrdr_daemon.file_writer import FileWriter
from ktrdr_daemon.worker import checkpoint_saver, load_checkpoint
from pipeline.checkpoint import IntervalCheckpoint
from pipeline.model import build_mlp
from pipeline.trainer import TrainingConfig, seed_everything, train_model
mode, job_dir = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(1)
g = torch.Generator().manual_seed(5)
X = torch.randn(3000, 8, generator=g)
y = (X[:, 0] > 0.3).long() + (X[:, 1] > 0.0).long()
config = TrainingConfig(epochs=EPOCHS, batch_size=32, learning_rate=0.005, seed=11)
def train(resume=None, checkpoints=None):
    seed_everything(0)
    model = build_mlp(8, [64, 32], 0.2, "relu")
    train_model(model, X[:2400], y[:2400], X[2400:], y[2400:], config,
                device=torch.device("cpu"), resume=resume, checkpoints=checkpoints)
    return model.state_dict()
if mode == "train":
    files = FileWriter(job_dir / "tmp")
    train(checkpoints=IntervalCheckpoint(checkpoint_saver(files, job_dir), 0.2))
    files.close()
    print("finished before it was killed")
else:
    state = load_checkpoint(job_dir)
    assert state is not None, "no checkpoint to resume"
    torch.save({"resumed": train(resume=state), "reference": train()}, job_dir / "weights.pt")
""".replace("EPOCHS", str(EPOCHS))


def _python(*args: str) -> list[str]:
    return [sys.executable, "-c", _SCRIPT, *args]


def test_sigkill_after_a_mid_run_interval_checkpoint_resumes_bit_identical(
        tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    (job_dir / "tmp").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    path = job_dir / CHECKPOINT / CHECKPOINT_FILE
    process = subprocess.Popen(_python("train", str(job_dir)), env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        # Two interval checkpoints: the second replaced the first, so the kill lands mid-run
        # with the file thread in full swing.
        first = None
        while process.poll() is None and time.monotonic() < deadline:
            if path.is_file():
                stamp = path.stat().st_mtime_ns
                first = first or stamp
                if stamp != first:
                    break
            time.sleep(0.01)
        assert process.poll() is None, process.communicate()[0]
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    state = load_checkpoint(job_dir)
    assert state is not None and state["epoch"] < EPOCHS  # taken mid-run by the interval
    subprocess.run(_python("resume", str(job_dir)), env=env, cwd=REPO, check=True,
                   timeout=600, capture_output=True)
    weights = torch.load(job_dir / "weights.pt", weights_only=True)
    assert_same(weights["resumed"], weights["reference"])


def test_the_resume_line_says_where_training_picks_up() -> None:
    """The log line of a resumed attempt: the epoch it continues (1-based: a checkpoint after
    epoch 2 continues epoch 3), the batch when taken mid-epoch, or that only saving is left."""
    between = {"epoch": 2, "batch": 0, "progress": {"stopped_early": False}}
    assert describe_resume(between, 8, 2) == "resumed from checkpoint at epoch 3 of 8 (attempt 2)"
    mid = {"epoch": 4, "batch": 17, "progress": {"stopped_early": False}}
    assert describe_resume(mid, 8, 3) == (
        "resumed from checkpoint at epoch 5 of 8, batch 18 (attempt 3)")
    for done in ({"epoch": 8, "batch": 0, "progress": {"stopped_early": False}},
                 {"epoch": 5, "batch": 0, "progress": {"stopped_early": True}}):
        assert describe_resume(done, 8, 2).startswith(
            f"resumed from checkpoint after training ended ({done['epoch']} of 8 epochs run)")
