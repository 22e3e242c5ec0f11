"""The model store: ``{root}/{strategy}/{timeframe}_v{N}/`` folders and a ``_latest`` link.

The filesystem is the database. A version is written whole into
``{root}/.staging/<unique>/version`` (one level deeper than a version folder, so that KTRDR's
``list_models``, which takes every ``{root}/*/*`` folder holding a metadata.json for a model,
never lists unfinished work or crash litter), flushed, then renamed into place in one step,
so readers see all of it or nothing, and a crash leaves only staging litter that no reader
looks at. Two writers that pick the same N race on that rename; the loser (the target folder
already exists and is not empty) takes N+1.
Loading never unpickles: the MLP is rebuilt from JSON and ``model.pt`` is read with
``weights_only=True``. ``model_full.pt`` (a pickled module) is written only for KTRDR's loader.
Every version is one KTRDR would have written (``pipeline.ktrdr_form`` and
``pipeline.ktrdr_files`` say how), and versions KTRDR wrote load here unedited.

``torch.save`` output is a function of the tensors and the file's base name (the zip's record
prefix), so the same weights always give a byte-identical ``model.pt``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import ktrdr_files
from pipeline.errors import PipelineError
from pipeline.ktrdr_form import check_outputs, form_for_type, form_of, output_width, plain_state
from pipeline.versions import (  # VersionInfo: ModelStore.versions' rows, re-exported
    STAGING,
    VersionInfo,
    fsync_dir,
    list_versions,
    point_latest,
    take_out,
    version_numbers,
)

FILES = (
    "model.pt",
    "config.json",
    "metrics.json",
    "features.json",
    "metadata.json",
    "metadata_v3.json",
    "model_full.pt",
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class LoadedModel:
    """A saved version, rebuilt on the CPU in eval mode."""

    model: torch.nn.Module
    metadata: dict
    features: list[str]
    config: dict
    metrics: dict
    path: Path
    normalization: dict = field(default_factory=dict)  # raw inputs' scaling, KTRDR's shape
    metadata_v3: dict = field(default_factory=dict)

    @property
    def output_format(self) -> str:
        """"regression" for a one-output model (a forward-return forecast), else
        "classification" (the last layer's width is the number of classes)."""
        return "regression" if output_width(self.model.state_dict()) == 1 else "classification"


def _check_name(kind: str, name: str) -> str:
    if not _SAFE_NAME.match(name) or name.startswith("."):
        raise PipelineError(
            f"{kind} {name!r} cannot name a model-store folder: use letters, digits, _ - . "
            "and do not start with a dot"
        )
    return name


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy and torch scalars become Python, non-finite floats become null
    (strict JSON has no NaN, and every reader must be able to parse our files)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(_plain(data), indent=2, allow_nan=False) + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _write_torch(path: Path, obj: Any) -> None:
    with open(path, "wb") as handle:
        if isinstance(obj, torch.jit.ScriptModule):  # a sequence model's model_full.pt
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(obj, handle)
        else:
            torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


class ModelStore:
    """Publish, list, load and delete model versions under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- writing ---------------------------------------------------------------------------

    def save(
        self,
        *,
        strategy_name: str,
        base_timeframe: str,
        model: torch.nn.Module,
        config: dict,
        metrics: dict,
        features: dict,
        metadata: dict,
        metadata_v3: dict,
        before_publish: Callable[[], None] | None = None,
        extra_files: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write a new version and return its folder.

        ``extra_files(staging)`` may add files (the training report) to the staging folder after
        the standard ones are written; they are flushed with the rest and published in the same
        rename, so they are part of the version from its first moment. Raising there publishes
        nothing. ``before_publish`` runs after everything is on disk and before the rename; the
        daemon re-checks its claim and the cancel flag there, and raises to withdraw. Then
        nothing is published and the staging folder is removed.
        """
        strategy = _check_name("strategy", strategy_name)
        timeframe = _check_name("timeframe", base_timeframe)
        staging_root = self.root / STAGING
        staging_root.mkdir(parents=True, exist_ok=True)
        holder = staging_root / f"{strategy}-{timeframe}-{os.getpid()}-{uuid.uuid4().hex}"
        holder.mkdir()
        staging = holder / "version"
        staging.mkdir()
        try:
            self._write_version(
                staging,
                strategy,
                timeframe,
                model,
                config,
                metrics,
                features,
                metadata,
                metadata_v3,
            )
            if extra_files is not None:
                extra_files(staging)
                for name in sorted(set(os.listdir(staging)) - set(FILES)):
                    _fsync_file(staging / name)
            fsync_dir(staging)
            if before_publish is not None:
                before_publish()
            target = self._publish(staging, strategy, timeframe)
        except BaseException:
            shutil.rmtree(holder, ignore_errors=True)
            raise
        holder.rmdir()
        point_latest(target.parent, timeframe)
        return target

    def _write_version(
        self,
        folder: Path,
        strategy: str,
        timeframe: str,
        model: torch.nn.Module,
        config: dict,
        metrics: dict,
        features: dict,
        metadata: dict,
        metadata_v3: dict,
    ) -> None:
        # KTRDR's key names and a module of torch classes only (no class of ours to import).
        state = plain_state(model)
        form = form_of(model)
        plain = form.plain(model)
        full = form.full(model)
        meta = {"strategy": strategy, "timeframe": timeframe, **metadata}
        meta.update(
            is_trained=True,
            created_at=metadata.get("created_at")
            or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            model_type=type(plain).__name__,  # what KTRDR records: the saved class's name
            pytorch_version=torch.__version__,
            torch_version=torch.__version__,
            architecture=dict(getattr(model, "config", {})),
            input_size=getattr(model, "config", {}).get("input_size"),
        )
        _write_torch(folder / "model.pt", state)
        _write_json(folder / "config.json", config)
        _write_json(folder / "metrics.json", metrics)
        _write_json(folder / "features.json", features)
        _write_json(folder / "metadata.json", meta)
        _write_json(folder / "metadata_v3.json", metadata_v3)
        _write_torch(folder / "model_full.pt", full)

    def _publish(self, staging: Path, strategy: str, timeframe: str) -> Path:
        """Rename the staging folder to the next free ``_v{N}``; a taken N means retry N+1."""
        parent = self.root / strategy
        parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10_000):
            numbers = version_numbers(parent, timeframe)
            target = parent / f"{timeframe}_v{max(numbers, default=0) + 1}"
            try:
                # POSIX rename onto an existing non-empty folder fails, so exactly one writer
                # wins each N. Published folders are never empty.
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    continue
                raise
            fsync_dir(parent)
            return target
        raise PipelineError(f"could not find a free version number under {parent}")

    # -- reading ---------------------------------------------------------------------------

    def load(self, path: Path) -> LoadedModel:
        """Rebuild the model of a version folder (or ``_latest`` link) on the CPU, eval mode.

        Reads versions of ours (either key layout) and KTRDR's, unedited: see
        :func:`pipeline.ktrdr_files.architecture` for where each fact is looked up."""
        folder = Path(path).resolve()
        if not (folder / "model.pt").is_file():
            raise PipelineError(f"{path} is not a saved model version (no model.pt)")
        docs = {name: _read_json(folder / f"{name}.json")
                for name in ("metadata", "config", "features", "metrics")}
        v3_path = folder / "metadata_v3.json"
        docs["metadata_v3"] = _read_json(v3_path) if v3_path.is_file() else {}
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        architecture = ktrdr_files.architecture(folder, docs, state)
        check_outputs(state, architecture, (docs["config"].get("model") or {}).get(
            "output_format"))
        form = form_for_type(architecture["type"])
        # KTRDR writes no class count: the last layer's width is the number of classes.
        model = form.build({**architecture, "num_classes": output_width(state)})
        form.load_state(model, state)
        model.eval()
        return LoadedModel(
            model, docs["metadata"], ktrdr_files.feature_names(docs), docs["config"],
            docs["metrics"], folder, ktrdr_files.normalization(docs), docs["metadata_v3"])

    def versions(self, strategy: str | None = None) -> list[VersionInfo]:
        """Every published version (staging is never listed), sorted by strategy, tf, N."""
        return list_versions(self.root, strategy)

    def is_trained(self, strategy: str) -> bool:
        """A strategy is trained when it has at least one complete version."""
        return bool(self.versions(strategy))

    # -- deleting --------------------------------------------------------------------------

    def delete(self, path: Path) -> None:
        """Remove a version: rename it out of sight first (one atomic step), then delete the
        files at leisure, then repoint ``_latest`` at the highest version left."""
        folder = Path(path)
        if folder.is_symlink():
            folder = folder.parent / os.readlink(folder)
        folder = folder.resolve()
        match = re.match(r"^(.+)_v\d+$", folder.name)
        if not match or not (folder / "model.pt").exists():
            raise PipelineError(f"{path} is not a saved model version")
        if not take_out(folder, f"deleted-{folder.parent.name}-{folder.name}-{uuid.uuid4().hex}"):
            raise FileNotFoundError(f"{path} was removed meanwhile")


def predict(loaded: LoadedModel, X: np.ndarray) -> np.ndarray:
    """Class ids (0 BUY, 1 HOLD, 2 SELL; a label source's own classes) for the rows of ``X``
    (for a sequence model, its windows: ``(windows, sequence_length, features)``); for a
    regression model the forecast returns, as floats."""
    with torch.no_grad():
        logits = loaded.model(torch.as_tensor(np.asarray(X), dtype=torch.float32))
    if loaded.output_format == "regression":
        return logits.reshape(-1).numpy()
    return logits.argmax(1).numpy()


def predict_proba(loaded: LoadedModel, X: np.ndarray) -> np.ndarray:
    """Class probabilities (softmax of the logits) for the rows of ``X``, already scaled."""
    if loaded.output_format == "regression":
        raise PipelineError(f"{loaded.path} is a regression model: it forecasts returns "
                            "(predict), it has no class probabilities")
    with torch.no_grad():
        logits = loaded.model(torch.as_tensor(np.asarray(X), dtype=torch.float32))
    return torch.softmax(logits, 1).numpy()
