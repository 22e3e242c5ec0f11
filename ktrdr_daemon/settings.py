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


class SettingsError(SystemExit):
    """A setting that cannot be used, said in one line: the setting, where its value came from
    (a flag, a ``KTRDR_*`` variable or the config file) and what is allowed.

    A :class:`SystemExit`, so a caller that does not catch it still ends with the message and
    no traceback; the CLI catches it to print ``error: ...`` and exit 64 (a usage error).
    """


# What each checked setting allows: (kind, lowest, lowest allowed itself, what to say).
_RULES: dict[str, tuple[type, float, bool, str]] = {
    "slots": (int, 1, True, "an integer >= 1 (jobs run at once)"),
    "threads": (int, 1, True, "an integer >= 1 (torch CPU threads per job)"),
    "heartbeat_seconds": (float, 0, False, "a number of seconds > 0"),
    "expire_seconds": (float, 0, False, "a number of seconds > 0"),
    "fence_seconds": (float, 0, False, "a number of seconds > 0"),
    "rescan_seconds": (float, 0, False, "a number of seconds > 0"),
    "cancel_grace_seconds": (float, 0, False, "a number of seconds > 0"),
    "checkpoint_seconds": (float, 0, True, "a number of seconds >= 0 (0: every batch)"),
}
_CHOICES = {"observer": ("auto", "inotify", "polling")}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def _where(name: str, origin: str, config: Path) -> str:
    return {"flag": f"--{name.replace('_', '-')}", "env": f"KTRDR_{name.upper()}",
            "config": f"{config}"}[origin]


def _coerce(name: str, value: Any, where: str = "") -> Any:
    """``value`` as the setting's type, checked against what the setting allows."""
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if value is None:
        return None
    if name in _PATHS:
        return Path(os.path.expanduser(str(value)))
    source = f" (from {where})" if where else ""
    if name in _RULES:
        want, low, inclusive, allowed = _RULES[name]
        bad = SettingsError(f"{name}: {value!r}{source} is not allowed; {name} must be {allowed}")
        if isinstance(value, bool) or (want is int and isinstance(value, float)):
            raise bad
        try:
            number = want(str(value).strip()) if isinstance(value, str) else want(value)
        except (TypeError, ValueError):
            raise bad from None
        if not (number >= low if inclusive else number > low) or number == float("inf"):
            raise bad  # NaN fails both comparisons; an infinite interval never fires
        return number
    if "bool" in str(kind):
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() not in _BOOLS:
            raise SettingsError(f"{name}: {value!r}{source} is not allowed; {name} must be "
                                "true or false (also yes/no, 1/0, on/off)")
        return _BOOLS[str(value).strip().lower()]
    if name in _CHOICES and str(value) not in _CHOICES[name]:
        raise SettingsError(f"{name}: {value!r}{source} is not allowed; {name} must be one of "
                            f"{', '.join(_CHOICES[name])}")
    return str(value)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the three sources; a flag left at ``None`` falls through to the next one.

    Every value is checked where it is read, so a bad one is refused with its origin before
    anything starts (``--slots 0`` would otherwise serve nothing, forever).
    """
    env = os.environ if env is None else env
    path = config_file or Path(env.get("KTRDR_CONFIG", CONFIG_FILE))
    from_file: Mapping[str, Any] = {}
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SettingsError(f"{path}: cannot be read as YAML: {problem}") from None
        if not isinstance(loaded, Mapping):
            raise SettingsError(f"{path}: expected a mapping of settings, got "
                                f"{type(loaded).__name__}")
        from_file = loaded
    values: dict[str, Any] = {}
    known = {f.name for f in fields(Settings)}
    unknown = sorted(str(k) for k in set(from_file) - known)
    if unknown:
        raise SettingsError(f"{path}: unknown settings {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    for name in known:
        flag = (flags or {}).get(name)
        env_value = env.get(f"KTRDR_{name.upper()}")
        for origin, candidate in (("flag", flag), ("env", env_value),
                                  ("config", from_file.get(name))):
            if candidate is not None:
                values[name] = _coerce(name, candidate, _where(name, origin, path))
                break
    settings = Settings(**values)
    if settings.fence_seconds >= settings.expire_seconds:
        raise SettingsError(
            f"fence_seconds ({settings.fence_seconds:g}) must be below expire_seconds "
            f"({settings.expire_seconds:g}): an owner must stop before others may reclaim its job")
    return settings
