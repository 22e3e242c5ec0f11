"""What a model looks like to KTRDR: one entry per model type, the only place that knows it.

A version we save must be one KTRDR would have saved (spec 10.1), and a version KTRDR saved
must load here. Both directions hinge on a few facts per model type, kept together in a
:class:`KtrdrForm`:

- which plain torch module KTRDR's network class corresponds to, so ``model.pt`` holds that
  module's ``state_dict`` under KTRDR's key names and ``model_full.pt`` pickles only torch
  classes (KTRDR's ``ModelStorage.load_model`` unpickles it with no class of ours importable);
- how to rebuild our module from KTRDR's ``config.json`` ``model`` section and an input size;
- how to load a state dict in either layout into our module.

KTRDR's key names, per its network classes: its MLP is a bare ``nn.Sequential`` of
Linear -> activation -> Dropout blocks, so keys are ``0.weight``, ``0.bias``, ``3.weight``...
Its ``LSTMNetwork``/``GRUNetwork`` hold ``lstm``/``gru`` (``nn.LSTM``/``nn.GRU``, batch_first),
``dropout`` and ``fc``, so keys are ``lstm.weight_ih_l0``, ``lstm.weight_hh_l0``,
``lstm.bias_ih_l0``, ``lstm.bias_hh_l0`` (per layer), ``fc.weight``, ``fc.bias`` (``gru.*``
likewise); ``metadata_v3.json`` then carries ``model_type`` "lstm"/"gru" and the
``sequence_length`` from ``model.architecture``. Our :mod:`pipeline.sequence` networks name their
submodules the same way, so their ``model.pt`` is KTRDR's as it is: its backtest ``ModelBundle``
rebuilds the network from ``config.json`` and loads it strictly.

``model_full.pt`` of a recurrent net cannot be a pickle of torch classes alone (no torch module
takes an LSTM's last hidden state), so it is the network compiled to TorchScript: KTRDR's
``ModelStorage.load_model`` calls ``torch.load(weights_only=False)``, which hands a TorchScript
archive to ``torch.jit.load``, and gets a module that needs no class of ours or of KTRDR's and
runs no pickled code; its live ``ModelLoader`` then uses that module as it is.

KTRDR's ``output_type`` and the output width come from the label source (its module in
:mod:`pipeline.labels` states both), read through :func:`output_type`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.labels import get_source
from pipeline.model import ACTIVATIONS, MLP, NUM_CLASSES, build_mlp
from pipeline.sequence import NETWORKS, RecurrentNetwork, build_recurrent

OLD_PREFIX = "network."  # versions we saved before issue 14 wrapped the Sequential


@dataclass(frozen=True)
class OutputType:
    """KTRDR's ``output_type`` name and the width of the last layer it builds for it."""

    name: str
    outputs: int


def output_type(labels: Mapping[str, Any]) -> OutputType:
    """The output type of a strategy's ``training.labels`` (KTRDR's default source: zigzag).

    Each label source states its KTRDR ``output_type`` and its classes (pipeline.labels); a
    regression source has one output, as KTRDR's orchestrator builds it."""
    source = get_source(str(labels.get("source", "zigzag")))
    return OutputType(source.output_type, len(source.classes) or 1)


@dataclass(frozen=True)
class KtrdrForm:
    """How one of our model types is stored so that KTRDR reads it, and read back."""

    model_type: str  # KTRDR's ``model.type`` and ``metadata_v3.model_type``
    our_class: type[nn.Module]
    plain: Callable[[nn.Module], nn.Module]  # the module whose state_dict KTRDR loads
    architecture: Callable[[Mapping[str, Any]], dict]  # config ``model`` section -> ours
    build: Callable[[Mapping[str, Any]], nn.Module]  # our architecture dict -> module
    load_state: Callable[[nn.Module, Mapping[str, torch.Tensor]], None]
    sequence_length: Callable[[Mapping[str, Any]], int | None]
    full: Callable[[nn.Module], nn.Module]  # what model_full.pt holds (CPU, eval mode)


def _mlp_architecture(model_section: Mapping[str, Any]) -> dict:
    """KTRDR's MLPTradingModel reads ``architecture.hidden_layers`` (required), ``dropout``
    (default 0.2) and ``activation`` (lower-cased, unknown names fall back to relu)."""
    arch = model_section.get("architecture") or {}
    if "hidden_layers" not in arch:
        raise PipelineError("config.json model.architecture has no hidden_layers")
    activation = str(arch.get("activation", "relu")).lower()
    return {
        "hidden_layers": [int(h) for h in arch["hidden_layers"]],
        "dropout": float(arch.get("dropout", 0.2)),
        "activation": activation if activation in ACTIVATIONS else "relu",
    }


def _mlp_build(arch: Mapping[str, Any]) -> MLP:
    return build_mlp(
        input_size=int(arch["input_size"]),
        hidden_layers=list(arch["hidden_layers"]),
        dropout=float(arch.get("dropout", 0.0)),
        activation=str(arch.get("activation", "relu")),
        num_classes=int(arch.get("num_classes", NUM_CLASSES)),
    )


def _mlp_load_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """KTRDR's layout (``0.weight``...) goes into the Sequential; ours before issue 14
    (``network.0.weight``...) into the wrapper. Anything else is refused by torch, strictly."""
    assert isinstance(model, MLP)
    if any(key.startswith(OLD_PREFIX) for key in state):
        model.load_state_dict(state)
    else:
        model.network.load_state_dict(state)


def _sequence_architecture(model_section: Mapping[str, Any]) -> dict:
    """KTRDR's LSTMTradingModel/GRUTradingModel read ``sequence_length`` (required),
    ``hidden_size`` (64), ``num_layers`` (2) and ``dropout`` (0.2)."""
    arch = model_section.get("architecture") or {}
    if "sequence_length" not in arch:
        raise PipelineError("config.json model.architecture has no sequence_length")
    return {
        "sequence_length": int(arch["sequence_length"]),
        "hidden_size": int(arch.get("hidden_size", 64)),
        "num_layers": int(arch.get("num_layers", 2)),
        "dropout": float(arch.get("dropout", 0.2)),
    }


def _sequence_build(model_type: str) -> Callable[[Mapping[str, Any]], nn.Module]:
    def build(arch: Mapping[str, Any]) -> nn.Module:
        return build_recurrent(
            model_type, int(arch["input_size"]), int(arch.get("hidden_size", 64)),
            int(arch.get("num_layers", 2)), float(arch.get("dropout", 0.2)),
            int(arch["sequence_length"]), int(arch.get("num_classes", NUM_CLASSES)))
    return build


def _sequence_full(model: nn.Module) -> nn.Module:
    """The network as TorchScript: loads with torch alone, forward pass included. (torch 2.10+
    calls TorchScript deprecated in favour of torch.export, whose files KTRDR's torch.load
    cannot read; TorchScript is what its loader takes.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(copy.deepcopy(model).cpu().eval())


def _mlp_full(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model.network).cpu().eval()


FORMS: dict[str, KtrdrForm] = {
    "mlp": KtrdrForm(
        model_type="mlp",
        our_class=MLP,
        plain=lambda model: model.network,  # nn.Sequential of torch layers only
        architecture=_mlp_architecture,
        build=_mlp_build,
        load_state=_mlp_load_state,
        sequence_length=lambda arch: None,
        full=_mlp_full,
    ),
    **{kind: KtrdrForm(
        model_type=kind,
        our_class=network,
        plain=lambda model: model,  # already lstm.*/gru.*, fc.*
        architecture=_sequence_architecture,
        build=_sequence_build(kind),
        load_state=lambda model, state: model.load_state_dict(state),
        sequence_length=lambda arch: int(arch["sequence_length"]),
        full=_sequence_full,
    ) for kind, network in NETWORKS.items()},
}


def sequence_length(model: nn.Module) -> int | None:
    """Rows per input window of a sequence model; None for a model that reads single rows."""
    return model.config["sequence_length"] if isinstance(model, RecurrentNetwork) else None


def form_for_type(model_type: str) -> KtrdrForm:
    """The form of a ``model.type`` as written in a strategy or in KTRDR's metadata."""
    form = FORMS.get(str(model_type).lower())
    if form is None:
        raise PipelineError(
            f"model type {model_type!r} cannot be loaded here yet; supported: {', '.join(FORMS)}"
        )
    return form


def form_of(model: nn.Module) -> KtrdrForm:
    """The form of one of our modules."""
    for form in FORMS.values():
        if isinstance(model, form.our_class):
            return form
    raise PipelineError(f"no KTRDR form for {type(model).__name__}")


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.pt``'s content: KTRDR's key names, detached CPU copies."""
    plain = form_of(model).plain(model)
    return {k: v.detach().to("cpu", copy=True) for k, v in plain.state_dict().items()}


def output_width(state: Mapping[str, torch.Tensor]) -> int:
    """Width of the last layer of a state dict (its last 2-D weight)."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not weights:
        raise PipelineError("model.pt holds no layer weights")
    return int(weights[-1].shape[0])


def input_width(state: Mapping[str, torch.Tensor]) -> int:
    """Input width of a state dict (its first 2-D weight), KTRDR's last resort too."""
    for key, value in state.items():
        if key.endswith("weight") and value.dim() == 2:
            return int(value.shape[1])
    raise PipelineError("model.pt holds no layer weights")


def check_outputs(state: Mapping[str, torch.Tensor], architecture: Mapping[str, Any],
                  output_format: str | None = None) -> None:
    """The last layer must fit what the version says: one output for regression (KTRDR's
    ``model.output_format: regression`` in config.json), at least two logits for a classifier.
    Say so instead of a shape error from torch."""
    width = output_width(state)
    if output_format == "regression" and width != 1:
        raise PipelineError(f"model.pt has {width} outputs but config.json says "
                            "model.output_format: regression (one output)")
    if output_format not in (None, "regression") and width < 2:
        raise PipelineError(f"model.pt has a single output (a regression model) but config.json "
                            f"says model.output_format: {output_format}")
    declared = architecture.get("num_classes")
    if declared is not None and int(declared) != width:
        raise PipelineError(f"model.pt has {width} outputs but the version's architecture says "
                            f"num_classes {declared}")
