"""Pick the device a job trains on, and prove it works before trusting it.

``torch.cuda.is_available()`` can say yes while the driver is broken, the GPU is out of memory
or taken by another process; a tiny allocation plus a sync is the cheapest honest test, so a
job fails here with a clear message instead of in the middle of training.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from pipeline.errors import PipelineError


def _prove(device: torch.device) -> None:
    """Allocate, compute and synchronise on ``device``; raise if any of it fails."""
    x = torch.arange(16, dtype=torch.float32, device=device)
    total = float((x * 2).sum().item())  # .item() forces a sync on every backend
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    if total != 240.0:
        raise RuntimeError(f"wrong result {total} from a test computation")


def _usable(device: torch.device) -> str | None:
    """None when the device works, else why not (for the error message)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available (no NVIDIA GPU, driver or CUDA build of torch)"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"there is no {device}; this machine has {count} CUDA device(s)"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available (needs Apple silicon, macOS 12.3+ and an MPS torch build)"
    try:
        _prove(device)
    except Exception as exc:  # any failure means "not usable", and we say which
        return f"a test allocation failed: {exc}"
    return None


def select_device(requested: str = "auto") -> torch.device:
    """Return a proven device: ``auto`` tries CUDA, then MPS, then CPU.

    An explicit request ("cpu", "cuda", "cuda:1", "mps") is honoured or refused with a
    :class:`PipelineError`, never silently downgraded: a user who asked for a GPU wants to know.
    """
    name = (requested or "auto").strip().lower()
    if name == "auto":
        candidates = []
        if torch.cuda.is_available():
            candidates.append(torch.device("cuda", 0))
        if torch.backends.mps.is_available():
            candidates.append(torch.device("mps"))
        for device in candidates:
            if _usable(device) is None:
                return device
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise PipelineError(
            f"device {requested!r} is not understood; allowed: auto, cpu, cuda, cuda:N, mps"
        )
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    why = _usable(device)
    if why is not None:
        raise PipelineError(f"device {requested!r} was requested but cannot be used: {why}")
    return device


def _cpu_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def describe_device(device: torch.device | str) -> dict[str, Any]:
    """What a daemon advertises about its device: canonical name, model name, memory in bytes."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"device": f"cuda:{index}", "name": props.name, "memory_bytes": props.total_memory}
    if device.type == "mps":
        limit = getattr(torch.mps, "recommended_max_memory", None)
        memory = int(limit()) if callable(limit) else None
        name = f"Apple MPS ({platform.machine()})"
        return {"device": "mps", "name": name, "memory_bytes": memory}
    name = platform.processor() or platform.machine() or "CPU"
    return {"device": "cpu", "name": name, "memory_bytes": _cpu_memory()}
