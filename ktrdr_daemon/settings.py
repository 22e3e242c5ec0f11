"""Settings: command-line flags, then ``KTRDR_*`` environment variables, then
``config/daemon.yaml``, then defaults. No other configuration system.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = Path("config/daemon.yaml")


@dataclass
class Settings:
    """Every setting the CLI and the daemon read; names match flags and ``KTRDR_<NAME>``."""

    spool: Path = Path("spool")
    models: Path = Path("models")
    data: Path | None = None  # None: the bundled sample data
    strategies: Path = Path("config/strategies")
    device: str = "auto"
    slots: int = 1
    threads: int = 1  # torch CPU threads per job (small MLPs run fastest on one)
    daemon_id: str | None = None
    heartbeat_seconds: float = 2.0
    expire_seconds: float = 30.0
    fence_seconds: float = 15.0  # below expire_seconds: an owner stops before others reclaim
    rescan_seconds: float = 2.0
    cancel_grace_seconds: float = 5.0
    # At most one checkpoint of a running job this often (and always at a hand-back and at the
    # end of training): what a crash may cost, about what reclaiming it from another host does.
    checkpoint_seconds: float = 30.0
    observer: str = "auto"  # auto | inotify | polling
    strict: bool = False

    def __post_init__(self) -> None:
        # Absolute, so result.json's model_path and the worker's paths do not depend on the
        # cwd of whoever reads them (symlinks are kept: confinement resolves them itself).
        for name in _PATHS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(os.path.expanduser(str(value))).absolute())

    @property
    def data_root(self) -> Path:
        if self.data is not None:
            return self.data
        from pipeline.market_data import default_data_root  # pandas: only when needed

        return default_data_root()


_PATHS = {"spool", "models", "data", "strategies"}


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if value is None:
        return None
    if name in _PATHS:
        return Path(os.path.expanduser(str(value)))
    if "int" in str(kind):
        return int(value)
    if "float" in str(kind):
        return float(value)
    if "bool" in str(kind):
        return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes"}
    return str(value)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the three sources; a flag left at ``None`` falls through to the next one."""
    env = os.environ if env is None else env
    path = config_file or Path(env.get("KTRDR_CONFIG", CONFIG_FILE))
    from_file: Mapping[str, Any] = {}
    if path.is_file():
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise SystemExit(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
        from_file = loaded
    values: dict[str, Any] = {}
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise SystemExit(f"{path}: unknown settings {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    for name in known:
        flag = (flags or {}).get(name)
        env_value = env.get(f"KTRDR_{name.upper()}")
        for candidate in (flag, env_value, from_file.get(name)):
            if candidate is not None:
                values[name] = _coerce(name, candidate)
                break
    settings = Settings(**values)
    if not settings.checkpoint_seconds >= 0:  # NaN too
        raise SystemExit(f"checkpoint_seconds must be a number of seconds >= 0, got "
                         f"{settings.checkpoint_seconds}")
    return settings
