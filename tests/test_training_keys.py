"""The training keys KTRDR parses and ignores, and we apply: each one's effect on a real run.

``lr_scheduler`` (learning rates per epoch in the history), ``optimizer``, ``weight_decay``,
``gradient_clip``; the defaults (one place: pipeline.training_keys); and a run handed back
mid-epoch with a scheduler and SGD momentum resumes to the same bits.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.checkpoint import IntervalCheckpoint, from_bytes, to_bytes
from pipeline.errors import HandedBack, PipelineError
from pipeline.model import build_mlp
from pipeline.optimization import build_optimizer
from pipeline.trainer import TrainingConfig, seed_everything, train_model
from pipeline.training_keys import DEFAULTS, describe_line

CPU = torch.device("cpu")


def make_data(n: int = 400, regression: bool = False, noise: bool = False):
    g = torch.Generator().manual_seed(2)
    X = torch.randn(n, 6, generator=g)
    if regression:
        y = 0.01 * X[:, 0] + 0.002 * torch.randn(n, generator=g)
    elif noise:
        y = torch.randint(0, 3, (n,), generator=g)
    else:
        y = (X[:, 0] > 0.3).long() + (X[:, 1] > 0).long()
    cut = int(n * 0.75)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def fresh(outputs: int = 3) -> nn.Module:
    seed_everything(0)
    return build_mlp(6, [16, 8], 0.1, "relu", outputs)


def run(config: TrainingConfig, **data_kwargs) -> tuple[nn.Module, list[dict]]:
    model = fresh(1 if config.output_format == "regression" else 3)
    result = train_model(model, *make_data(**data_kwargs), config, device=CPU)
    return model, result.history


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_step_and_exponential_schedulers_set_each_epochs_rate() -> None:
    step = TrainingConfig(6, 32, 0.1, lr_scheduler={"type": "step", "step_size": 2,
                                                   "gamma": 0.5})
    _, history = run(step)
    assert [h["learning_rate"] for h in history] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    exponential = TrainingConfig(4, 32, 0.1, lr_scheduler={"type": "exponential",
                                                          "gamma": 0.9})
    _, history = run(exponential)
    assert [h["learning_rate"] for h in history] == pytest.approx(
        [0.1 * 0.9 ** e for e in range(4)], rel=1e-12)
    _, constant = run(TrainingConfig(3, 32, 0.1))
    assert {h["learning_rate"] for h in constant} == {0.1}


def test_reduce_on_plateau_halves_after_patience_epochs_without_gain() -> None:
    """Replays torch's rule on the recorded val_loss: a gain is below best * (1 - 1e-4);
    more than ``patience`` epochs without one multiply the rate by ``factor``."""
    config = TrainingConfig(25, 32, 0.05, lr_scheduler={"type": "reduce_on_plateau",
                                                       "factor": 0.5, "patience": 1})
    _, history = run(config, noise=True)  # noise: validation stalls, the rate must drop
    lr, best, bad, expected = 0.05, math.inf, 0, []
    for h in history:
        expected.append(lr)
        if h["val_loss"] < best * (1 - 1e-4):
            best, bad = h["val_loss"], 0
        else:
            bad += 1
        if bad > 1:
            lr, bad = lr * 0.5, 0
    assert [h["learning_rate"] for h in history] == pytest.approx(expected, rel=1e-12)
    assert expected[-1] < 0.05  # it did drop


def test_optimizers_differ_and_take_their_decay() -> None:
    weights = {}
    for name in ("adam", "adamw", "sgd", "rmsprop"):
        weights[name], _ = run(TrainingConfig(2, 32, 0.01, optimizer=name))
    names = list(weights)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not same_weights(weights[a], weights[b]), (a, b)
    params = list(fresh().parameters())
    for fmt, decay in (("classification", 1e-4), ("regression", 0.0)):  # KTRDR's defaults
        optimizer = build_optimizer(TrainingConfig(output_format=fmt), params)
        assert isinstance(optimizer, torch.optim.Adam)
        assert optimizer.param_groups[0]["weight_decay"] == decay
    sgd = build_optimizer(TrainingConfig(optimizer="sgd", weight_decay=0.01), params)
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["weight_decay"]) == (0.9, 0.01)
    decayed, _ = run(TrainingConfig(2, 32, 0.01, weight_decay=0.5))
    assert not same_weights(decayed, weights["adam"])


def test_gradient_clip_off_is_no_clipping() -> None:
    """A large rate and large targets make gradients large: clipping at 1.0 changes the run;
    a bound nothing reaches gives the very weights of no clipping (the one difference)."""
    common = dict(epochs=2, batch_size=32, learning_rate=0.05, output_format="regression",
                  loss="mse")
    off, _ = run(TrainingConfig(**common, gradient_clip=None), regression=True)
    far, _ = run(TrainingConfig(**common, gradient_clip=1e9), regression=True)
    tight, _ = run(TrainingConfig(**common, gradient_clip=1e-3), regression=True)
    assert same_weights(off, far)
    assert not same_weights(off, tight)
    assert DEFAULTS["gradient_clip"] == 1.0 == TrainingConfig().gradient_clip


def test_config_defaults_and_bad_values() -> None:
    regression = TrainingConfig.from_strategy({"output_format": "regression"})
    assert (regression.loss, regression.weight_decay, regression.huber_delta) == (
        "huber", 0.0, 0.01)
    classification = TrainingConfig.from_strategy({})
    assert (classification.loss, classification.weight_decay, classification.optimizer) == (
        "cross_entropy", 1e-4, "adam")
    assert classification.lr_scheduler is None and classification.gradient_clip == 1.0
    with pytest.raises(PipelineError, match="training.loss: 'huber' is not supported for "
                                            "classification"):
        TrainingConfig(loss="huber")
    with pytest.raises(PipelineError, match="training.lr_scheduler"):
        TrainingConfig(lr_scheduler={"type": "step"})  # incomplete: no step_size, gamma
    line = describe_line(TrainingConfig(optimizer="sgd", gradient_clip=None,
                                        lr_scheduler={"type": "exponential", "gamma": 0.95}))
    assert line == ("loss cross_entropy; sgd lr 0.001, weight decay 0.0001, momentum 0.9; "
                    "lr scheduler exponential (gamma 0.95); no gradient clipping; "
                    "no early stopping")


class StopAfter:
    def __init__(self, k: int) -> None:
        self.k, self.calls = k, 0

    def reason(self):
        self.calls += 1
        return "handback" if self.calls > self.k else None


@pytest.mark.parametrize("scheduler", [
    {"type": "step", "step_size": 3, "gamma": 0.5},  # a fresh one would wait 3 more epochs
    {"type": "reduce_on_plateau", "factor": 0.5, "patience": 2},  # a fresh one forgets both
])
def test_handback_and_resume_keeps_scheduler_and_momentum(scheduler: dict) -> None:
    data = make_data(noise=True)  # 300 training rows, batch 32: 10 batches per epoch
    config = TrainingConfig(8, 32, 0.05, optimizer="sgd", lr_scheduler=scheduler, seed=5)
    reference = fresh()
    expected = train_model(reference, *data, config, device=CPU)
    handed: list[dict] = []
    with pytest.raises(HandedBack):
        train_model(fresh(), *data, config, device=CPU, stop=StopAfter(45),
                    checkpoints=IntervalCheckpoint(handed.append, 3600.0))
    state = from_bytes(to_bytes(handed[-1]))  # as a worker writes and reads it
    seed_everything(99)
    resumed = build_mlp(6, [16, 8], 0.1, "relu")
    result = train_model(resumed, *data, config, device=CPU, resume=state)
    assert same_weights(reference, resumed)
    rates = [h["learning_rate"] for h in result.history]
    assert rates == [h["learning_rate"] for h in expected.history]
    assert len(set(rates)) > 1  # the scheduler did act, before and after the handback
