"""The JSON files of a model version, in KTRDR's shape plus our own keys, and read back from
either writer.

KTRDR's readers and what they take (spec 10.1, study section 9):
- ``ModelStorage.load_model`` opens ``model_full.pt``, ``config.json``, ``metrics.json``,
  ``features.json``, ``metadata.json`` (all required) and ``scaler.pkl`` (if present);
  its live ``ModelLoader`` rebuilds from ``config["model"]`` and ``metadata["input_size"]`` or
  ``features["feature_count"]`` when it got a state dict instead of a module;
- ``list_models`` reads ``metadata.json``: ``strategy_name``, ``symbol``, ``timeframe``,
  ``created_at``, ``training_summary.best_val_accuracy``;
- the backtester's ``ModelBundle.load`` reads ``metadata_v3.json`` (``model_name`` and
  ``strategy_name`` required), ``features.json["feature_count"]``, ``config.json``'s ``model``,
  ``decisions`` and ``training``, then ``model.pt``; its feature cache rebuilds the strategy from
  ``indicators``, ``fuzzy_sets`` (``{indicator, <name>: {type, parameters}}``), ``nn_inputs``,
  ``training_symbols``, ``training_timeframes`` (base first) and scales raw inputs with
  ``normalization_params``.
Keys of ours that KTRDR does not know (``strategy``, ``architecture``, ``feature_names``,
``importance``, ``training``, ``test``...) stay where they always were, so older readers of ours
keep working.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import PipelineError
from pipeline.ktrdr_form import form_for_type, input_width, output_type
from pipeline.strategy import Strategy


def training_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """KTRDR's ``ModelTrainer.get_training_summary`` computed from our epoch records.

    A regression model's "accuracy" is, in KTRDR's records as in ours, the directional
    accuracy (``pred > 0`` against ``y > 0``); ours names it so, KTRDR's fields take it."""
    if not history:
        return {"epochs_trained": 0}
    hit = "directional_accuracy" if "train_directional_accuracy" in history[0] else "accuracy"
    ours = {"train_loss": "train_loss", "train_accuracy": f"train_{hit}",
            "val_loss": "val_loss", "val_accuracy": f"val_{hit}"}
    col = {k: [h[key] for h in history if h.get(key) is not None] for k, key in ours.items()}
    summary: dict[str, Any] = {
        "epochs_trained": len(history),
        "final_train_loss": col["train_loss"][-1],
        "final_train_accuracy": col["train_accuracy"][-1],
        "best_train_accuracy": max(col["train_accuracy"]),
        "training_time": sum(float(h.get("duration", 0.0)) for h in history),
        "history": {"train_loss": col["train_loss"], "train_accuracy": col["train_accuracy"]},
    }
    if col["val_loss"]:
        summary.update(final_val_loss=col["val_loss"][-1],
                       final_val_accuracy=col["val_accuracy"][-1],
                       best_val_accuracy=max(col["val_accuracy"]))
        summary["history"].update(val_loss=col["val_loss"], val_accuracy=col["val_accuracy"])
    return summary


def ktrdr_fuzzy_sets(strategy: Strategy) -> dict[str, dict]:
    """Our parsed fuzzy sets in KTRDR's YAML form, memberships in order."""
    return {
        set_id: {"indicator": spec["indicator"],
                 **{m["name"]: {"type": m["type"], "parameters": list(m["parameters"])}
                    for m in spec["memberships"]}}
        for set_id, spec in strategy.fuzzy_sets.items()
    }


def ktrdr_nn_inputs(strategy: Strategy) -> list[dict]:
    """nn_inputs with explicit timeframe lists, keys as KTRDR's ``NNInputSpec`` has them."""
    out = []
    for spec in strategy.nn_inputs:
        if "raw_indicator" in spec:
            out.append({"raw_indicator": spec["raw_indicator"], "timeframes": spec["timeframes"],
                        "normalization": spec.get("normalization", "none")})
        else:
            out.append({"fuzzy_set": spec["fuzzy_set"], "timeframes": spec["timeframes"]})
    return out


def normalization_params(strategy: Strategy, fitted: dict[str, dict]) -> dict[str, dict]:
    """Every raw input's parameters in KTRDR's shape; ``{"method": "none"}`` when unscaled."""
    params: dict[str, dict] = {}
    for spec in strategy.nn_inputs:
        if "raw_indicator" in spec:
            for tf in spec["timeframes"]:
                fid = f"{tf}_{spec['raw_indicator']}_raw"
                params[fid] = fitted.get(fid, {"method": "none"})
    return params


def version_documents(
    *,
    strategy: Strategy,
    names: list[str],
    normalization: dict[str, dict],
    importance: dict[str, float],
    history: list[dict[str, Any]],
    test: dict[str, Any],
    metrics: dict[str, Any],
    metadata: dict[str, Any],
    created_at: datetime,
) -> dict[str, dict]:
    """config, metrics, features, metadata and metadata_v3 of a version, KTRDR's fields
    first; ``metrics`` and ``metadata`` are ours and are kept whole."""
    summary = training_summary(history)
    config = _config(strategy)
    return {
        "config": config,
        "metrics": {**summary, **_ktrdr_test(test), "symbols": strategy.symbols,
                    "start_date": strategy.start_date, "end_date": strategy.end_date,
                    **metrics},
        "features": {
            "model_version": "pure_fuzzy_v1", "feature_type": "pure_fuzzy",
            "fuzzy_features": names, "feature_count": len(names),
            "temporal_config": {"lookback_periods": 0, "enabled": False},
            "scaling_info": {"requires_scaling": False,
                             "reason": "fuzzy_values_already_normalized"},
            "feature_importance": importance,
            # ours
            "feature_names": names, "resolved_features": names, "importance": importance,
            "normalization": normalization,
        },
        "metadata": _metadata(strategy, summary, metadata, created_at),
        "metadata_v3": _metadata_v3(strategy, config, names, normalization, summary,
                                    created_at),
    }


def _config(strategy: Strategy) -> dict:
    """The strategy as trained, its architecture spelled out (KTRDR's defaults differ from
    ours) and, for regression, ``model.output_format`` as KTRDR's orchestrator records it."""
    config = copy.deepcopy(strategy.raw)
    model_section = config.setdefault("model", {})
    model_section.setdefault("type", strategy.model.get("type", "mlp"))
    arch = model_section.setdefault("architecture", {})
    for key, value in strategy.model.items():
        if key != "type":
            arch.setdefault(key, value)
    if output_type(strategy.training.get("labels") or {}).name == "regression":
        model_section["output_format"] = "regression"
    return config


def _metadata(strategy: Strategy, summary: dict, ours: dict, created_at: datetime) -> dict:
    """KTRDR's metadata.json (what its ``list_models`` shows), then our keys."""
    return {
        "strategy_name": strategy.name,
        "symbol": strategy.symbols[0] if len(strategy.symbols) == 1 else "MULTI",
        "timeframe": strategy.base_timeframe,
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "model_version": "pure_fuzzy_v1", "architecture_type": "pure_fuzzy",
        "training_summary": {"epochs": summary["epochs_trained"],
                             "final_accuracy": summary.get("final_train_accuracy", 0),
                             "best_val_accuracy": summary.get("best_val_accuracy", 0)},
        "feature_engineering": {"removed": True, "scaler_required": False, "fuzzy_only": True},
        # ours
        "strategy": strategy.name, "timeframes": strategy.timeframes,
        "symbols": strategy.symbols, **ours,
    }


def _metadata_v3(strategy: Strategy, config: dict, names: list[str],
                 normalization: dict[str, dict], summary: dict, created_at: datetime) -> dict:
    """KTRDR's ``ModelMetadata.to_dict``, every field; training timeframes base first."""
    base = strategy.base_timeframe
    model_section = config["model"]
    form = form_for_type(model_section["type"])
    return {
        "model_name": strategy.name, "strategy_name": strategy.name,
        "created_at": created_at.isoformat(),
        "strategy_version": str(strategy.raw.get("version", "3.0")),
        "indicators": copy.deepcopy(strategy.raw.get("indicators", {})),
        "fuzzy_sets": ktrdr_fuzzy_sets(strategy),
        "nn_inputs": ktrdr_nn_inputs(strategy),
        "resolved_features": names,
        "training_symbols": strategy.symbols,
        "training_timeframes": [base] + [tf for tf in strategy.timeframes if tf != base],
        "training_metrics": summary,
        "output_type": output_type(strategy.training.get("labels") or {}).name,
        "model_type": form.model_type,
        "sequence_length": form.sequence_length(model_section["architecture"]),
        "normalization_params": normalization_params(strategy, normalization),
        # As KTRDR writes them: the file's entries unchanged (None when there are none) and
        # every entry's source ids in order, which its backtest reloads the series by.
        "context_data_config": copy.deepcopy(strategy.raw.get("context_data")) or None,
        "context_source_ids": [sid for entry in strategy.context_data
                               for sid in entry.source_ids()],
    }


def _ktrdr_test(test: dict[str, Any]) -> dict[str, Any]:
    """KTRDR's host path merges its test metrics into metrics.json under these names."""
    keys = {"test_accuracy": "test_accuracy", "test_loss": "test_loss",
            "precision": "precision", "recall": "recall", "f1": "f1_score",
            # regression: KTRDR's test_accuracy is its directional accuracy
            "directional_accuracy": "test_accuracy", "mae": "mae"}
    return {theirs: test[ours] for ours, theirs in keys.items() if ours in test}


# -- reading either writer's versions -------------------------------------------------------


def architecture(folder: Path, docs: dict[str, dict], state: dict[str, torch.Tensor]) -> dict:
    """Our architecture dict with ``type`` and ``input_size``, from wherever the writer put it:
    ``metadata.architecture`` (ours), else ``config.json``'s ``model`` section with the input
    size from ``metadata.input_size``, ``features.feature_count``, the length of
    ``resolved_features``, or the first weight matrix (the order KTRDR's loaders use)."""
    meta, config = docs["metadata"], docs["config"]
    v3 = docs.get("metadata_v3") or {}
    if isinstance(meta.get("architecture"), dict) and meta["architecture"].get("input_size"):
        return {"type": (config.get("model") or {}).get("type", "mlp"), **meta["architecture"]}
    model_section = config.get("model") or {}
    model_type = v3.get("model_type") or model_section.get("type", "mlp")
    arch = form_for_type(model_type).architecture(model_section)
    size = (meta.get("input_size") or docs["features"].get("feature_count")
            or len(v3.get("resolved_features") or []) or input_width(state))
    if not size:
        raise PipelineError(f"{folder}: cannot tell the model's input size")
    return {"type": model_type, **arch, "input_size": int(size)}


def feature_names(docs: dict[str, dict]) -> list[str]:
    """Ordered input names: ours, else KTRDR's ``resolved_features`` (what its backtest trusts),
    else ``features.json``'s ``fuzzy_features``/``feature_names``."""
    features, v3 = docs["features"], docs.get("metadata_v3") or {}
    for names in (features.get("feature_names"), v3.get("resolved_features"),
                  features.get("fuzzy_features"), features.get("features")):
        if names:
            return list(names)
    return []


def normalization(docs: dict[str, dict]) -> dict[str, dict]:
    """Scaling of raw inputs: ours, else KTRDR's ``normalization_params`` without the
    ``{"method": "none"}`` entries (an absent entry means unscaled in both)."""
    ours = docs["features"].get("normalization")
    if isinstance(ours, dict) and ours:
        return ours
    params = (docs.get("metadata_v3") or {}).get("normalization_params") or {}
    return {k: v for k, v in params.items() if v.get("method") in ("minmax", "zscore")}
