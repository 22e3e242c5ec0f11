"""Checkpoint packing: every tensor back bit for bit, in a few flat records, read safely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from ktrdr_daemon import spool as sp
from ktrdr_daemon.file_writer import FileWriter
from ktrdr_daemon.worker import CHECKPOINT, CHECKPOINT_FILE, checkpoint_saver, load_checkpoint
from pipeline.checkpoint import Packer, from_bytes, pack, to_bytes, unpack
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
    tensors = {
        "model/layer.0.weight": torch.randn(4, 3, generator=g),
        "model/bias": torch.zeros(4),
        "optimizer/0/step": torch.tensor(7.0),
        "moments": torch.arange(3),
        "rng": torch.randint(0, 255, (16,), dtype=torch.uint8, generator=g),
        "flags": torch.tensor([True, False]),
        "empty": torch.empty(0, 5),
        "strided": torch.arange(12.0).reshape(3, 4).t(),
    }
    values = {
        "groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "fused": None}],
        "state": {0: {"count": 3}},
        "keys": {1: "one", (2, "b"): [0.5, float("inf")], None: True},
        "nothing": None,
    }
    back, back_values = unpack(from_bytes(to_bytes(pack(tensors, values))))
    assert back_values == values
    assert isinstance(back_values["groups"][0]["betas"], tuple) and 0 in back_values["state"]
    assert list(back) == list(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor), name
    # Unpacked tensors are independent: changing one changes nothing else.
    back["model/bias"].add_(1)
    assert torch.equal(back["model/layer.0.weight"], tensors["model/layer.0.weight"])


def test_a_torn_or_forged_checkpoint_is_refused_never_unpickled() -> None:
    data = to_bytes(pack({"w": torch.arange(6.0).reshape(2, 3)}, {"lr": 0.1, "betas": (1, 2)}))
    for cut in range(len(data)):  # torn at every byte: refused, or (past the header) short
        with pytest.raises(ValueError):
            from_bytes(data[:cut])
    head = len(data) - 6 * 4  # where the tensor's bytes start
    header = data[16:head].decode()

    def forged(text: str) -> bytes:
        body = text.encode()
        return data[:8] + len(body).to_bytes(8, "little") + body + data[head:]

    assert torch.equal(unpack(from_bytes(forged(header)))[0]["w"], torch.arange(6.0).reshape(2, 3))
    for bad in (header.replace('"float32"', '"object"'),  # no such dtype
                header.replace("[6]", "[600]"),  # past the end of the file
                header.replace("[6]", "[-6]"),
                header.replace("[6]", '"6"'),
                header.replace('"little"', '"big"'),
                "[1, 2]", "{bad json"):
        with pytest.raises(ValueError):
            from_bytes(forged(bad))
    # A layout that does not fit its flat tensors is refused when unpacked.
    for bad in ("[2,30]", "[-2,3]", "[2.5,3]", "2"):
        with pytest.raises(ValueError, match="layout"):
            unpack(from_bytes(forged(header.replace("[2,3]", bad))))
    with pytest.raises(ValueError, match="format"):
        from_bytes(b"PK\x03\x04" + data[4:])  # a torch.save (zip) file, as older versions wrote


def test_pack_copies_so_later_steps_do_not_change_a_checkpoint() -> None:
    live = torch.zeros(3)
    packed = pack({"w": live}, None)
    live.add_(5)
    assert torch.equal(unpack(packed)[0]["w"], torch.zeros(3))


def test_a_packer_follows_in_place_updates_new_tensors_and_replaced_memory() -> None:
    """The packer reuses its flat views of the last state's tensors: they must see what the
    optimizer wrote into them in place, and a new tensor, or one given new memory (same
    object), must be read afresh."""
    weight, step = torch.zeros(2, 3), torch.tensor(1.0)
    packer = Packer()

    def state() -> dict[str, torch.Tensor]:
        return unpack(packer.pack({"w": weight, "step": step, "rng": rng}, {}))[0]

    rng = torch.zeros(4, dtype=torch.uint8)
    first = state()
    weight.add_(1)  # what an optimizer step does
    step.fill_(2)
    rng = torch.ones(4, dtype=torch.uint8)  # get_state(): a new tensor every time
    second = state()
    weight.data = torch.full((2, 3), 7.0)  # same object, other memory
    third = state()
    rng = torch.ones(5, dtype=torch.uint8)  # another shape: a new layout
    fourth = state()
    assert torch.equal(first["w"], torch.zeros(2, 3)) and first["step"] == 1
    assert torch.equal(second["w"], torch.ones(2, 3)) and second["step"] == 2
    assert torch.equal(second["rng"], torch.ones(4, dtype=torch.uint8))
    assert torch.equal(third["w"], torch.full((2, 3), 7.0))
    assert fourth["rng"].shape == (5,) and torch.equal(fourth["w"], third["w"])


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
    tensors, _ = unpack(state["state"])
    # 3 layers: 6 weights and biases, each with Adam's step and 2 moments, best weights, RNGs.
    assert len(tensors) == 6 + 18 + 6 + 2 and "permutation" not in tensors
    # ... written as one tensor per dtype (float32 and the RNGs' uint8; the permutation, int64,
    # only mid-epoch), everything else as text.
    assert len(tensors_in(state)) == 2
    assert {type(v) for k, v in state.items() if k != "state"} == {int, str}
    assert json.loads(state["history"])[-1]["epoch"] == state["epoch"] == 3


def test_worker_checkpoint_files_roundtrip_and_foreign_ones_are_ignored(tmp_path: Path) -> None:
    spool = sp.Spool(tmp_path / "spool")
    spool.ensure_layout()
    job_dir = spool.jobs / "job"
    job_dir.mkdir()
    state = train_with_checkpoints(2)[-1]
    files = FileWriter(spool.tmp)
    checkpoint_saver(files, job_dir)(state)
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
    path.unlink()
    (path.parent / "state.pt").write_bytes(b"PK\x03\x04 a torch.save file")  # before state.ckpt
    assert load_checkpoint(job_dir, warnings.append) is None  # type: ignore[arg-type]
    assert [w["type"] for w in warnings] == ["warning", "warning", "warning"]
    assert "version" in warnings[0]["message"] and "starting over" in warnings[1]["message"]
    assert "state.pt" in warnings[2]["message"] and "another version" in warnings[2]["message"]
