"""Settings: flags, then KTRDR_* environment, then config/daemon.yaml, then defaults (spec 7)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from ktrdr_daemon.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "daemon.yaml"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.yaml"
    path.write_text(text)
    return path


def test_each_source_overrides_the_next(tmp_path: Path) -> None:
    config = write_config(tmp_path, "spool: /from/file\nmodels: /from/file\nslots: 3\n"
                                    "device: cpu\nexpire_seconds: 90\n")
    env = {"KTRDR_SPOOL": "/from/env", "KTRDR_MODELS": "/from/env", "KTRDR_SLOTS": "5"}
    flags = {"spool": "/from/flag", "models": None}  # None: the flag was not given
    s = load_settings(flags, env=env, config_file=config)
    assert s.spool == Path("/from/flag")
    assert s.models == Path("/from/env")
    assert s.slots == 5
    assert s.device == "cpu"
    assert s.expire_seconds == 90.0
    assert s.rescan_seconds == Settings().rescan_seconds  # nowhere set: the default


def test_values_take_the_settings_types(tmp_path: Path) -> None:
    env = {"KTRDR_SLOTS": "2", "KTRDR_HEARTBEAT_SECONDS": "0.5", "KTRDR_STRICT": "true",
           "KTRDR_DATA": "~/prices"}
    s = load_settings(env=env, config_file=tmp_path / "absent.yaml")
    assert s.slots == 2 and isinstance(s.slots, int)
    assert s.heartbeat_seconds == 0.5
    assert s.strict is True
    assert s.data == Path("~/prices").expanduser()
    assert load_settings(env={"KTRDR_STRICT": "no"}, config_file=tmp_path / "x").strict is False


def test_the_config_file_comes_from_ktrdr_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, "observer: polling\n")
    assert load_settings(env={"KTRDR_CONFIG": str(config)}).observer == "polling"


def test_no_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(env={}, config_file=tmp_path / "absent.yaml") == Settings()


def test_an_unknown_key_is_an_error_that_names_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, "spool: s\nexpire_secs: 60\n")
    with pytest.raises(SystemExit, match="unknown settings expire_secs"):
        load_settings(env={}, config_file=config)


def test_a_config_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "- spool\n- models\n")
    with pytest.raises(SystemExit, match="expected a mapping"):
        load_settings(env={}, config_file=config)


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_checkpoint_interval_below_zero_or_nan_is_an_error(value: str) -> None:
    with pytest.raises(SystemExit, match="checkpoint_seconds"):
        load_settings(env={"KTRDR_CHECKPOINT_SECONDS": value}, config_file=Path("/nonexistent"))
    assert load_settings(env={"KTRDR_CHECKPOINT_SECONDS": "0"},
                         config_file=Path("/nonexistent")).checkpoint_seconds == 0


def test_the_shipped_config_lists_every_setting_with_its_default() -> None:
    # Keeps config/daemon.yaml the one page of documentation for every setting.
    raw = yaml.safe_load(SHIPPED.read_text())
    assert isinstance(raw, dict)
    assert set(raw) == {f.name for f in fields(Settings)}
    defaults = Settings()
    for name, value in raw.items():
        default = getattr(defaults, name)
        expected = value if not isinstance(default, Path) else Path(value).absolute()
        assert expected == default, name


def test_the_shipped_config_loads_and_changes_nothing() -> None:
    assert load_settings(env={}, config_file=SHIPPED) == Settings()
