"""KTRDR's three model loaders, step by step, without KTRDR installed (for the tests).

Each function follows one KTRDR loader (kpiteira/ktrdr, read for the facts; no code copied):
which files it opens in which order, which keys it reads, what it falls back to when a file
or a key is missing, and what then raises. Every fallback taken is recorded in ``trace``, so
a test can require that our versions go down KTRDR's main path (no fallback) and still see
that KTRDR's own versions load here too.

One deliberate difference: KTRDR unpickles ``model_full.pt`` with ``weights_only=False``.
Here it is opened with torch's restricted unpickler and an allow-list of torch layer classes,
which is exactly the claim to prove (the file needs no class outside torch) and never runs
arbitrary code. A TorchScript archive (our LSTM/GRU ``model_full.pt``) is what torch.load with
``weights_only=False`` hands to ``torch.jit.load``; here ``torch.jit.load`` is called directly.

Sequence models (KTRDR's ``LSTMNetwork``/``GRUNetwork``): the backtest bundle builds the network
from ``config.json`` (sequence_length required; hidden_size 64, num_layers 2, dropout 0.2) and
loads ``model.pt`` strictly; the live loader uses ``model_full.pt``'s module as it is and, given
a state dict instead, refuses any type but mlp.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

TORCH_LAYERS = [nn.Sequential, nn.Linear, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU,
                nn.Dropout, nn.LSTM, nn.GRU]
KTRDR_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                     "leaky_relu": nn.LeakyReLU}
CLASS_NAMES = {"classification": 3, "regime_classification": 4, "context_classification": 3}
MEMBERSHIP_TYPES = ("triangular", "trapezoidal", "gaussian")


class KtrdrRecurrent(nn.Module):
    """KTRDR's LSTMNetwork / GRUNetwork as its build_model makes them: a batch-first recurrent
    layer named after its cell, Dropout, Linear on the last layer's final hidden state."""

    def __init__(self, cell: str, input_size: int, hidden: int, layers: int, dropout: float,
                 outputs: int) -> None:
        super().__init__()
        self.cell = cell
        kind = nn.LSTM if cell == "lstm" else nn.GRU
        setattr(self, cell, kind(input_size, hidden, layers, batch_first=True,
                                 dropout=dropout if layers > 1 else 0.0))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = getattr(self, self.cell)(x)
        h_n = state[0] if self.cell == "lstm" else state
        return self.fc(self.dropout(h_n[-1]))


def build_ktrdr_model(model_config: dict, input_size: int) -> nn.Module:
    """``model_bundle._build_model``: mlp, lstm or gru by ``type`` (lower-cased)."""
    kind = model_config.get("type", "mlp").lower()
    if kind == "mlp":
        return build_ktrdr_mlp(model_config, input_size)
    if kind not in ("lstm", "gru"):
        raise ValueError(f"Unsupported model type: {kind}")
    arch = model_config["architecture"]
    if "sequence_length" not in arch:
        raise ValueError("sequence_length must be specified in architecture config")
    outputs = (1 if model_config.get("output_format") == "regression"
               else model_config.get("num_classes", 3))
    return KtrdrRecurrent(kind, input_size, arch.get("hidden_size", 64),
                          arch.get("num_layers", 2), arch.get("dropout", 0.2), outputs)


def is_torchscript(path: Path) -> bool:
    """torch's own test (``_is_torchscript_zip``): the archive holds ``constants.pkl``."""
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl"
                   for name in archive.namelist())


@dataclass
class Loaded:
    model: Any  # nn.Module, or a state dict where KTRDR returns one
    files: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    trace: list[str] = field(default_factory=list)  # fallbacks taken, in order


def _json(path: Path) -> Any:
    with open(path) as handle:  # KTRDR opens these unconditionally: missing -> error
        return json.load(handle)


def _highest(parent: Path, prefix: str) -> Path | None:
    found = [(int(m.group(1)), p) for p in parent.glob(f"{prefix}_v*")
             if (m := re.fullmatch(re.escape(prefix) + r"_v(\d+)", p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def _version_dir(root: Path, strategy: str, symbol: str, tf: str, version: str | None,
                 trace: list[str]) -> Path:
    """``ModelStorage.load_model``'s lookup: {tf}_latest, {symbol}_{tf}_latest, the highest
    {tf}_v*, the highest {symbol}_{tf}_v*; an explicit version tries {tf}_{version} first."""
    parent = root / strategy
    if version is not None:
        for candidate in (parent / f"{tf}_{version}", parent / f"{symbol}_{tf}_{version}"):
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"Model not found: {strategy} {tf} {version}")
    for candidate in (parent / f"{tf}_latest", parent / f"{symbol}_{tf}_latest"):
        if candidate.exists():
            return candidate
    trace.append("no _latest link: highest version by number")
    found = _highest(parent, tf) or _highest(parent, f"{symbol}_{tf}")
    if found is None:
        raise FileNotFoundError(f"No models found for {strategy}/{tf}")
    return found


def storage_load_model(root: Path, strategy: str, symbol: str, tf: str,
                       version: str | None = None) -> Loaded:
    """``ModelStorage.load_model``: model_full.pt (else model.pt as a bare state dict), then
    config, metrics, features and metadata JSON, then scaler.pkl if present."""
    out = Loaded(model=None)
    folder = _version_dir(Path(root), strategy, symbol, tf, version, out.trace)
    try:
        if is_torchscript(folder / "model_full.pt"):  # torch.load dispatches to jit.load
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                out.model = torch.jit.load(folder / "model_full.pt", map_location="cpu")
        else:
            with torch.serialization.safe_globals(TORCH_LAYERS):
                out.model = torch.load(folder / "model_full.pt", map_location="cpu",
                                       weights_only=True)
    except Exception as exc:  # KTRDR's bare except: fall back to the state dict
        out.trace.append(f"model_full.pt unusable ({type(exc).__name__}): state dict returned")
        out.model = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    for name in ("config", "metrics", "features", "metadata"):
        out.files[name] = _json(folder / f"{name}.json")
    if (folder / "scaler.pkl").exists():
        out.trace.append("scaler.pkl present: KTRDR would unpickle it")
    out.path = folder
    return out


def build_ktrdr_mlp(model_config: dict, input_size: int) -> nn.Sequential:
    """``MLPTradingModel.build_model``: hidden_layers required; dropout 0.2 and relu by default;
    an unknown activation becomes relu; one output for regression, else num_classes (3)."""
    arch = model_config["architecture"]
    act = KTRDR_ACTIVATIONS.get(str(arch.get("activation", "relu")).lower(), nn.ReLU)
    layers: list[nn.Module] = []
    width = input_size
    for hidden in arch["hidden_layers"]:
        layers += [nn.Linear(width, hidden), act(), nn.Dropout(arch.get("dropout", 0.2))]
        width = hidden
    output_format = model_config.get("output_format", "classification")
    if output_format == "regression":
        layers.append(nn.Linear(width, 1))
    elif output_format == "classification":
        layers.append(nn.Linear(width, model_config.get("num_classes", 3)))
    else:
        raise ValueError(f"Unsupported output_format {output_format!r}")
    return nn.Sequential(*layers)


def live_load_model(root: Path, strategy: str, symbol: str, tf: str) -> Loaded:
    """The live/paper ``ModelLoader.load_model``: ModelStorage's result; a state dict is rebuilt
    from ``config["model"]`` (type mlp only) with the input size from ``metadata.input_size``,
    then ``features.feature_count``, then the first ``*.weight`` key; strict load; eval."""
    out = storage_load_model(root, strategy, symbol, tf)
    if isinstance(out.model, dict):
        config, meta = out.files["config"], out.files["metadata"]
        if config["model"]["type"].lower() != "mlp":
            raise ValueError(f"Unknown model type: {config['model']['type']}")
        size = meta.get("input_size")
        if size is None:
            out.trace.append("metadata.input_size null: features.feature_count")
            size = out.files["features"].get("feature_count")
        if size is None:
            out.trace.append("no feature_count: first weight's width")
            first = next(k for k in out.model if k.endswith(".weight"))
            size = out.model[first].shape[1]
        module = build_ktrdr_mlp(config["model"], size)
        module.load_state_dict(out.model)
        out.model = module
    out.model.eval()
    return out


def _check_fuzzy_set(set_id: str, spec: dict) -> list[str]:
    """``FuzzySetDefinition`` (shorthand lists expanded) and the fuzzy engine's membership
    check; returns the membership names in order."""
    if "indicator" not in spec:
        raise ValueError(f"fuzzy set {set_id}: indicator required")
    names = []
    for name, body in spec.items():
        if name == "indicator":
            continue
        body = {"type": "triangular", "parameters": body} if isinstance(body, list) else body
        if not isinstance(body, dict) or body.get("type", "triangular") not in MEMBERSHIP_TYPES:
            raise ValueError(f"fuzzy set {set_id}.{name}: not a membership {body!r}")
        [float(p) for p in body["parameters"]]  # list[float] or a validation error
        names.append(name)
    return names


def _check_nn_input(spec: dict) -> None:
    """``NNInputSpec``: exactly one of fuzzy_set / raw_indicator, timeframes required,
    normalization only for raw inputs and one of KTRDR's three."""
    if bool(spec.get("fuzzy_set")) == bool(spec.get("raw_indicator")):
        raise ValueError(f"nn_input {spec}: exactly one of fuzzy_set and raw_indicator")
    if "timeframes" not in spec:
        raise ValueError(f"nn_input {spec}: timeframes required")
    norm = spec.get("normalization")
    if norm is not None and (spec.get("fuzzy_set") or norm not in ("minmax", "zscore", "none")):
        raise ValueError(f"nn_input {spec}: bad normalization")


def resolve_features(meta: dict) -> list[tuple[str, str | None]]:
    """``FeatureResolver.resolve`` on the strategy rebuilt from metadata_v3: (feature id,
    fuzzy set id or None for a raw input), nn_inputs order x timeframes x memberships."""
    timeframes = meta.get("training_timeframes") or ["1h"]
    out: list[tuple[str, str | None]] = []
    for spec in meta["nn_inputs"]:
        tfs = timeframes if spec["timeframes"] == "all" else spec["timeframes"]
        if spec.get("fuzzy_set"):
            names = _check_fuzzy_set(spec["fuzzy_set"], meta["fuzzy_sets"][spec["fuzzy_set"]])
            out += [(f"{tf}_{spec['fuzzy_set']}_{n}", spec["fuzzy_set"]) for tf in tfs
                    for n in names]
        else:
            out += [(f"{tf}_{spec['raw_indicator']}_raw", None) for tf in tfs]
    return out


def bundle_load(folder: Path) -> Loaded:
    """The backtester's ``ModelBundle.load`` and the check its v3 feature cache makes.

    metadata_v3.json (required; model_name and strategy_name required, created_at ISO);
    input size from features.json's feature_count else len(resolved_features); the model
    section of config.json when it has an architecture, else an MLP [64, 32]; num_classes from
    output_type; model.pt with weights_only, strict; then the strategy rebuilt from the
    metadata (symbols default ["UNKNOWN"], timeframes ["1h"], base = first), and the feature
    cache's resolution of it, which must produce every resolved feature."""
    folder = Path(folder)
    out = Loaded(model=None, path=folder)
    meta = _json(folder / "metadata_v3.json")
    meta["model_name"], meta["strategy_name"]  # KeyError as in ModelMetadata.from_dict
    if meta.get("created_at") is not None:
        datetime.fromisoformat(meta["created_at"])
    out.files["metadata_v3"] = meta
    features = _json(folder / "features.json") if (folder / "features.json").exists() else {}
    size = features.get("feature_count")
    if size is None:
        out.trace.append("no features.json feature_count: len(resolved_features)")
        size = len(meta.get("resolved_features", []))
    if not size:
        raise ValueError("Cannot determine input_size")
    model_config: dict = {"type": "mlp", "architecture": {"hidden_layers": [64, 32]}}
    config = _json(folder / "config.json") if (folder / "config.json").exists() else {}
    if "architecture" in (config.get("model") or {}):
        model_config = dict(config["model"])
    else:
        out.trace.append("no model architecture in config.json: default MLP [64, 32]")
    model_config.setdefault(
        "num_classes", CLASS_NAMES.get(meta.get("output_type", "classification"), 3))
    out.model = build_ktrdr_model(model_config, size)
    out.model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu",
                                         weights_only=True))
    out.model.eval()
    for indicator_id, spec in (meta.get("indicators") or {}).items():
        if "type" not in spec:
            raise ValueError(f"indicator {indicator_id}: type required")
    for spec in meta.get("nn_inputs") or []:
        _check_nn_input(spec)
    if not meta.get("training_symbols"):
        out.trace.append("no training_symbols: rebuilt with symbol UNKNOWN")
    if not meta.get("training_timeframes"):
        out.trace.append("no training_timeframes: rebuilt as a single 1h strategy")
    resolved = resolve_features(meta)
    missing = set(meta.get("resolved_features", [])) - {fid for fid, _ in resolved}
    if missing:
        raise ValueError(f"Feature mismatch: missing {sorted(missing)[:5]}")
    params = meta.get("normalization_params") or {}
    for fid, set_id in resolved:
        if set_id is None and fid not in params:
            out.trace.append(f"no normalization_params for {fid}: raw values fed unscaled")
    out.files["feature_names"] = list(meta.get("resolved_features", []))
    # The backtester keeps config.json's decisions: they choose the decision function's rule.
    out.files["decisions"] = dict(config.get("decisions") or {"output_format": "classification"})
    return out


def decide(bundle: Loaded, X: Any) -> list[str]:
    """``DecisionFunction._predict`` per row of a regression bundle (``decisions.output_format:
    regression``): output [0, 0] is the predicted return; BUY above, SELL below minus
    ``round_trip_cost x min_edge_multiplier`` (0.003 and 1.5 when absent), else HOLD."""
    decisions = bundle.files["decisions"]
    if decisions.get("output_format", "classification") != "regression":
        raise ValueError("only the regression rule is walked here")
    cost = decisions.get("cost_model", {})
    threshold = cost.get("round_trip_cost", 0.003) * cost.get("min_edge_multiplier", 1.5)
    signals = []
    for row in X:
        with torch.no_grad():
            outputs = bundle.model(torch.as_tensor(row, dtype=torch.float32).unsqueeze(0))
        value = float(outputs[0, 0])
        signals.append("BUY" if value > threshold else "SELL" if value < -threshold else "HOLD")
    return signals


def list_models(root: Path) -> list[dict]:
    """``ModelStorage.list_models``: every non-``_latest`` folder with a metadata.json."""
    models = []
    for strategy_dir in Path(root).iterdir():
        if not strategy_dir.is_dir():
            continue
        for folder in strategy_dir.iterdir():
            if not folder.is_dir() or "_latest" in folder.name:
                continue
            if (folder / "metadata.json").exists():
                meta = _json(folder / "metadata.json")
                models.append({"path": str(folder), "strategy_name": meta.get("strategy_name"),
                               "symbol": meta.get("symbol"), "timeframe": meta.get("timeframe"),
                               "created_at": meta.get("created_at"),
                               "accuracy": meta.get("training_summary", {}).get(
                                   "best_val_accuracy", 0)})
    return sorted(models, key=lambda m: m["created_at"], reverse=True)
