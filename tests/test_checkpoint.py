"""Checkpoint packing: every tensor back bit for bit, in a few flat records, read safely."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ktrdr_daemon import spool as sp
from ktrdr_daemon.file_writer import FileWriter
from ktrdr_daemon.worker import CHECKPOINT, CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from pipeline.checkpoint import from_bytes, pack, to_bytes, unpack
from pipeline.model import build_mlp
from pipeline.trainer import CHECKPOINT_VERSION, TrainingConfig, train_model


def tensors_in(value: object) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors_in(item)]
    if isinstance(value, list | tuple):
        return [t for item in value for t in tensors_in(item)]
    return []


def test_pack_and_unpack_give_back_every_tensor_and_value() -> None:
    g = torch.Generator().manual_seed(0)
    tree = {
        "weights": {"layer.0.weight": torch.randn(4, 3, generator=g), "bias": torch.zeros(4)},
        "state": {0: {"step": torch.tensor(7.0), "moments": (torch.ones(2), torch.arange(3))}},
        "groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "fused": None}],
        "rng": torch.randint(0, 255, (16,), dtype=torch.uint8, generator=g),
        "flags": torch.tensor([True, False]),
        "empty": torch.empty(0, 5),
        "nothing": None,
    }
    back = unpack(from_bytes(to_bytes(pack(tree))))
    assert back["groups"] == tree["groups"] and back["nothing"] is None
    assert isinstance(back["state"][0]["moments"], tuple) and 0 in back["state"]
    for mine, theirs in zip(tensors_in(back), tensors_in(tree), strict=True):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        assert torch.equal(mine, theirs)
    # Unpacked tensors are independent: changing one changes nothing else.
    back["weights"]["bias"].add_(1)
    assert torch.equal(back["state"][0]["moments"][0], torch.ones(2))


def test_pack_copies_so_later_steps_do_not_change_a_checkpoint() -> None:
    live = {"w": torch.zeros(3)}
    packed = pack(live)
    live["w"].add_(5)
    assert torch.equal(unpack(packed)["w"], torch.zeros(3))


def train_with_checkpoints(epochs: int = 3) -> list[dict]:
    torch.manual_seed(0)
    X, y = torch.randn(200, 6), torch.arange(200) % 3
    states: list[dict] = []
    train_model(build_mlp(6, [16, 8], 0.1, "relu"), X[:150], y[:150], X[150:], y[150:],
                TrainingConfig(epochs, 16, 0.01, seed=1), device=torch.device("cpu"),
                on_checkpoint=states.append)
    return states


def test_a_training_checkpoint_is_a_few_flat_tensors() -> None:
    state = train_with_checkpoints()[-1]
    unpacked = unpack(state["tensors"])
    # 3 layers: 6 weights and biases, each with Adam's step and 2 moments, best weights, RNGs.
    assert len(tensors_in(unpacked)) >= 6 + 18 + 6 + 2
    # ... written as one tensor per dtype (float32 and the RNGs' uint8), the permutation
    # only mid-epoch (None at an epoch's end).
    assert len(tensors_in(state)) == 2 and state["permutation"] is None
    assert json.loads(state["history"])[-1]["epoch"] == state["epoch"] == 3


def test_worker_checkpoint_files_roundtrip_and_foreign_ones_are_ignored(tmp_path: Path) -> None:
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    job_dir = spool.jobs / "job"
    job_dir.mkdir()
    state = train_with_checkpoints(2)[-1]
    files = FileWriter(spool.tmp)
    save_checkpoint(files, job_dir, state)
    files.close()
    loaded = load_checkpoint(job_dir)
    assert loaded is not None and loaded["epoch"] == 2 and loaded["history"] == state["history"]
    assert not list(spool.tmp.iterdir())  # the temporary file was renamed into place

    warnings: list[dict] = []
    path = job_dir / CHECKPOINT / CHECKPOINT_FILE
    path.write_bytes(to_bytes({**state, "version": CHECKPOINT_VERSION - 1}))  # an older daemon
    assert load_checkpoint(job_dir, warnings.append) is None  # type: ignore[arg-type]
    path.write_bytes(b"PK\x03\x04 torn")
    assert load_checkpoint(job_dir, warnings.append) is None  # type: ignore[arg-type]
    assert [w["type"] for w in warnings] == ["warning", "warning"]
    assert "version" in warnings[0]["message"] and "starting over" in warnings[1]["message"]
