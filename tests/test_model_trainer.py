"""Model, device and trainer: shapes, determinism, best-weight restore, stop and exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.checkpoint import IntervalCheckpoint, from_bytes, to_bytes
from pipeline.device import describe_device, select_device
from pipeline.errors import Cancelled, HandedBack, PipelineError
from pipeline.model import MLP, build_mlp
from pipeline.store import ModelStore
from pipeline.trainer import (
    TrainingConfig,
    class_weights,
    focal_loss,
    seed_everything,
    train_model,
)

CPU = torch.device("cpu")
EPOCH_KEYS = {
    "type", "epoch", "epochs", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
    "learning_rate", "duration", "best_epoch", "best_val_loss",
}  # fmt: skip


def make_data(n: int = 600, features: int = 8, seed: int = 1, noise: bool = False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, features, generator=g)
    if noise:
        y = torch.randint(0, 3, (n,), generator=g)
    else:
        y = (X[:, 0] > 0.3).long() + (X[:, 1] > 0.0).long()
    cut = int(n * 0.75)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def fresh_model(features: int = 8, hidden=(16, 8), dropout: float = 0.2) -> MLP:
    seed_everything(0)
    return build_mlp(features, list(hidden), dropout, "relu")


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class StopAfter:
    """A stop source that answers ``reason`` after ``k`` batches have been allowed."""

    def __init__(self, k: int, reason: str) -> None:
        self.k, self.why, self.calls = k, reason, 0

    def reason(self):
        self.calls += 1
        return self.why if self.calls > self.k else None


def roundtrip(state: dict) -> dict:
    """Exactly what a worker does: to bytes (torch.save) and back (weights_only)."""
    return from_bytes(to_bytes(state))


def every_batch(states: list[dict]) -> IntervalCheckpoint:
    """The checkpoint policy with no interval: a state after every batch and at the end."""
    return IntervalCheckpoint(states.append, 0.0)


def only_when_forced(states: list[dict]) -> IntervalCheckpoint:
    """The policy with an interval no test reaches: hand-back and end only."""
    return IntervalCheckpoint(states.append, 3600.0)


class FakeClock:
    """Seconds that pass one per trained batch (advanced by the batch events)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def on_event(self, event: dict) -> None:
        if event["type"] == "batch":
            self.now += 1.0


# -- model and device ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation,cls",
    [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("leaky_relu", nn.LeakyReLU)],
)
def test_mlp_layers_and_shape(activation: str, cls: type) -> None:
    model = build_mlp(5, [8, 4], 0.1, activation)
    kinds = [type(m) for m in model.network]
    assert kinds == [nn.Linear, cls, nn.Dropout, nn.Linear, cls, nn.Dropout, nn.Linear]
    assert model.network[-1].out_features == 3
    assert model(torch.zeros(7, 5)).shape == (7, 3)
    assert model.config == {
        "input_size": 5, "hidden_layers": [8, 4], "dropout": 0.1, "activation": activation,
        "num_classes": 3,
    }  # fmt: skip
    four = build_mlp(5, [8], 0.1, activation, num_classes=4)  # regime labels
    assert four(torch.zeros(2, 5)).shape == (2, 4) and four.config["num_classes"] == 4


def test_mlp_rejects_unknown_activation() -> None:
    with pytest.raises(PipelineError, match="activation.*allowed: relu"):
        build_mlp(5, [8], 0.1, "gelu")


def test_class_weights_formula_with_absent_class() -> None:
    w = class_weights(torch.tensor([0, 0, 0, 1]))
    # n = [3, 1, 0]; 1/n = [1/3, 1, -]; sum = 4/3; w = (1/n) / sum * 3
    assert torch.allclose(w, torch.tensor([0.75, 2.25, 0.0]))
    balanced = class_weights(torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.allclose(balanced, torch.ones(3))


def test_select_device_cpu_and_auto() -> None:
    assert select_device("cpu") == CPU
    auto = select_device("auto")
    assert auto.type in ("cpu", "cuda", "mps")
    info = describe_device(CPU)
    assert info["device"] == "cpu" and info["name"]
    assert info["memory_bytes"] is None or info["memory_bytes"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_unavailable_cuda_is_a_clear_error(name: str) -> None:
    with pytest.raises(PipelineError, match=f"device '{name}' was requested but cannot be used"):
        select_device(name)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_unavailable_mps_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="'mps' was requested.*MPS is not available"):
        select_device("mps")


def test_unknown_device_name() -> None:
    with pytest.raises(PipelineError, match="not understood"):
        select_device("tpu")


def test_training_config_from_strategy() -> None:
    config = TrainingConfig.from_strategy(
        {"epochs": 5, "batch_size": 16, "learning_rate": 0.01, "loss": "focal",
         "early_stopping": {"patience": 3, "min_delta": 0.001}, "seed": None}
    )  # fmt: skip
    assert config == TrainingConfig(5, 16, 0.01, "focal", 2.0, {"patience": 3, "min_delta": 0.001})
    assert TrainingConfig.from_strategy({}).epochs == 100
    with pytest.raises(PipelineError, match="training.loss"):
        TrainingConfig.from_strategy({"loss": "mse"})


# -- training -----------------------------------------------------------------------------


def test_same_seed_same_weights_and_identical_model_files(tmp_path: Path) -> None:
    data = make_data()
    config = TrainingConfig(epochs=3, batch_size=32, learning_rate=0.005, seed=7)
    models = []
    for _ in range(2):
        model = fresh_model()
        train_model(model, *data, config, device=CPU)
        models.append(model)
    assert weights_equal(*models)
    blobs = []
    for i, model in enumerate(models):
        path = ModelStore(tmp_path / f"store{i}").save(
            strategy_name="s", base_timeframe="1h", model=model, config={}, metrics={},
            features={}, metadata={}, metadata_v3={},
        )  # fmt: skip
        blobs.append((path / "model.pt").read_bytes())
    assert blobs[0] == blobs[1]  # torch.save output depends only on tensors and file name
    other = fresh_model()
    train_model(other, *data, TrainingConfig(3, 32, 0.005, seed=8), device=CPU)
    assert not weights_equal(models[0], other)  # the seed really drives the shuffle


def test_best_weights_are_restored_not_the_last() -> None:
    data = make_data(n=160, noise=True)  # random labels: the net memorises, val loss rises
    model = fresh_model(hidden=(128,), dropout=0.0)
    snapshots: list[dict] = []
    config = TrainingConfig(epochs=25, batch_size=16, learning_rate=0.01, seed=1)
    result = train_model(model, *data, config, device=CPU, checkpoints=every_batch(snapshots))
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == losses.index(min(losses)) + 1 < len(losses)
    assert result.best_val_loss == min(losses) < losses[-1]
    epoch_ends = {s["epoch"]: s for s in snapshots if s["batch"] == 0}
    assert sorted(epoch_ends) == list(range(1, 26))
    best = epoch_ends[result.best_epoch]["model"]
    last = snapshots[-1]["model"]
    state = model.state_dict()
    assert all(torch.equal(state[k], best[k]) for k in state)
    assert not all(torch.equal(state[k], last[k]) for k in state)


def test_early_stopping_stops_after_patience() -> None:
    data = make_data()
    # min_delta so large that only the first epoch counts as an improvement
    config = TrainingConfig(3_0, 64, 0.005, early_stopping={"patience": 3, "min_delta": 10.0})
    result = train_model(fresh_model(), *data, config, device=CPU)
    assert result.epochs_run == 4 and result.stopped_early
    noisy = make_data(n=160, noise=True)
    config = TrainingConfig(40, 16, 0.01, early_stopping={"patience": 2, "min_delta": 0.0}, seed=1)
    result = train_model(fresh_model(hidden=(128,), dropout=0.0), *noisy, config, device=CPU)
    assert result.stopped_early and result.epochs_run == result.best_epoch + 2
    assert len(result.history) == result.epochs_run


def test_cancel_stops_within_one_batch_without_checkpoint() -> None:
    events: list[dict] = []
    checkpoints: list[dict] = []
    stop = StopAfter(5, "cancel")
    with pytest.raises(Cancelled):
        train_model(
            fresh_model(), *make_data(), TrainingConfig(3, 32, 0.005), device=CPU,
            on_event=events.append, stop=stop, checkpoints=only_when_forced(checkpoints),
            batch_event_interval=0.0,
        )  # fmt: skip
    assert [e["batch"] for e in events if e["type"] == "batch"] == [1, 2, 3, 4, 5]
    assert checkpoints == []  # a cancel is no hand-back: nothing to resume


@pytest.mark.parametrize("k", [3, 15, 17, 31])  # 15 batches per epoch: mid, end, mid, mid
def test_handback_and_resume_is_bit_identical(k: int) -> None:
    data = make_data()  # 450 training rows, batch 32 -> 15 batches per epoch
    config = TrainingConfig(epochs=3, batch_size=32, learning_rate=0.005, seed=3)
    reference = fresh_model()
    expected = train_model(reference, *data, config, device=CPU)

    handed: list[dict] = []
    with pytest.raises(HandedBack):
        train_model(
            fresh_model(), *data, config, device=CPU, stop=StopAfter(k, "handback"),
            checkpoints=only_when_forced(handed),
        )  # fmt: skip
    assert len(handed) == 1  # the hand-back's, whatever the interval
    state = roundtrip(handed[-1])
    assert (state["epoch"], state["batch"]) == divmod(k, 15)

    seed_everything(1234)  # the resumed process starts with other RNG states and weights
    resumed = build_mlp(8, [16, 8], 0.2, "relu")
    result = train_model(resumed, *data, config, device=CPU, resume=state)
    assert weights_equal(reference, resumed)
    assert result.best_epoch == expected.best_epoch
    strip = [{k: v for k, v in h.items() if k != "duration"} for h in result.history]
    assert strip == [{k: v for k, v in h.items() if k != "duration"} for h in expected.history]


def test_checkpoints_at_most_every_interval_and_at_the_end_and_resume_from_one() -> None:
    """The interval counts from the first batch's end and from each save, checked after every
    batch (an epoch's end included); the end of training always saves. A state taken mid-run
    by the interval resumes to the same weights as the run that was never stopped."""
    data = make_data()  # 15 batches an epoch
    config = TrainingConfig(epochs=3, batch_size=32, learning_rate=0.005, seed=3)
    clock, states = FakeClock(), []
    reference = fresh_model()
    train_model(reference, *data, config, device=CPU, on_event=clock.on_event,
                batch_event_interval=0.0,
                checkpoints=IntervalCheckpoint(states.append, 10.0, clock=clock))
    # After batches 1, 11, 21, 31, 41 of 45 in all: batch 1 starts the clock, then one every
    # 10; the epoch ends (batches 15 and 30) fall between; the end of training always.
    assert [(s["epoch"], s["batch"]) for s in states] == [(0, 11), (1, 6), (2, 1), (2, 11),
                                                           (3, 0)]
    state = roundtrip(states[1])  # mid-epoch 2, as a SIGKILL right after it would leave it
    seed_everything(99)
    resumed = build_mlp(8, [16, 8], 0.2, "relu")
    result = train_model(resumed, *data, config, device=CPU, resume=state)
    assert weights_equal(reference, resumed)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


def test_resume_from_epoch_end_checkpoint(tmp_path: Path) -> None:
    data = make_data()
    config = TrainingConfig(4, 64, 0.005, early_stopping={"patience": 5, "min_delta": 0.0})
    reference = fresh_model()
    checkpoints: list[dict] = []
    train_model(reference, *data, config, device=CPU, checkpoints=every_batch(checkpoints))
    (after_two,) = [c for c in checkpoints if (c["epoch"], c["batch"]) == (2, 0)]
    path = tmp_path / "last.pt"
    path.write_bytes(to_bytes(after_two))
    state = from_bytes(path.read_bytes())
    assert state["epoch"] == 2 and state["batch"] == 0
    assert state["permutation"] is None  # drawn afresh at the next epoch
    resumed = fresh_model()
    train_model(resumed, *data, config, device=CPU, resume=state)
    assert weights_equal(reference, resumed)


def test_focal_loss_trains_and_reduces_to_cross_entropy() -> None:
    logits = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    target = torch.arange(20) % 3
    plain = nn.functional.cross_entropy(logits, target)
    assert torch.allclose(focal_loss(logits, target, torch.ones(3), gamma=0.0), plain)
    config = TrainingConfig(2, 32, 0.005, loss="focal", focal_gamma=2.0)
    result = train_model(fresh_model(), *make_data(), config, device=CPU)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)


def test_progress_events_shape_and_rate_limit() -> None:
    events: list[dict] = []
    config = TrainingConfig(2, 32, 0.005)
    result = train_model(
        fresh_model(), *make_data(), config, device=CPU, on_event=events.append,
        batch_event_interval=3600.0,
    )  # fmt: skip
    epochs = [e for e in events if e["type"] == "epoch"]
    batches = [e for e in events if e["type"] == "batch"]
    assert [set(e) for e in epochs] == [EPOCH_KEYS, EPOCH_KEYS]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[-1]["epochs"] == 2
    # a long interval leaves the first batch only (it tells readers how many batches an
    # epoch has); each epoch's own event stands for its last batch
    assert [(e["epoch"], e["batch"]) for e in batches] == [(1, 1)]
    assert all(set(e) == {"type", "epoch", "epochs", "batch", "batches"} for e in batches)
    assert result.samples_per_second > 0 and result.duration > 0
    events.clear()
    train_model(
        fresh_model(), *make_data(), config, device=CPU, on_event=events.append,
        batch_event_interval=0.0,
    )  # fmt: skip
    assert len([e for e in events if e["type"] == "batch"]) == 30
