"""Reading jobs (spool spec section 2): bare strategies, job files, inline strategies, what a job
overrides, all errors at once, and strategy paths confined to the strategies root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.errors import StrategyError
from pipeline.job import load_job

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "strategies"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """A strategies root holding copies of the examples, and a separate folder for job files."""
    strategies, jobs = tmp_path / "strategies", tmp_path / "jobs"
    shutil.copytree(EXAMPLES, strategies)
    jobs.mkdir()
    return strategies, jobs


def write_job(folder: Path, data: dict, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def errors_of(excinfo: pytest.ExceptionInfo[StrategyError]) -> list[str]:
    return excinfo.value.errors


def test_bare_v3_strategy_is_a_job_with_defaults() -> None:
    job = load_job(EXAMPLES / "rsi_minimal.yaml")
    assert job.strategy.name == "rsi_minimal"
    assert job.strategy.symbols == ["EURUSD"] and job.strategy.timeframes == ["1h"]
    assert job.priority == 0 and job.seed == 42
    assert job.execution == {"mode": "auto", "require_gpu": False, "max_attempts": 3,
                             "wait_for_gpu": 0}
    assert job.warnings == []
    assert job.normalized["strategy"]["name"] == "rsi_minimal"


def test_job_file_names_a_strategy_under_the_root(roots: tuple[Path, Path]) -> None:
    strategies, jobs = roots
    path = write_job(jobs, {"strategy": "multi_indicator.yaml", "priority": 5,
                            "execution": {"mode": "local", "max_attempts": 1}})
    job = load_job(path, strategies_root=strategies)
    assert job.strategy.name == "multi_indicator"
    assert job.priority == 5
    assert job.execution["mode"] == "local" and job.execution["max_attempts"] == 1
    # the normalized job (job.yaml) carries the whole strategy, not the file name
    assert job.normalized["strategy"]["indicators"]["adx_14"] == {"type": "adx", "period": 14}


def test_inline_strategy_mapping() -> None:
    inline = yaml.safe_load((EXAMPLES / "rsi_minimal.yaml").read_text())
    inline["name"] = "inline_rsi"
    job = load_job({"strategy": inline, "seed": 3})
    assert job.strategy.name == "inline_rsi" and job.seed == 3
    assert job.strategy.source == "<inline>"


def test_job_keys_override_the_strategy(roots: tuple[Path, Path]) -> None:
    strategies, jobs = roots
    path = write_job(jobs, {
        "strategy": "multi_symbol.yaml", "symbols": ["NASDAQ"], "timeframes": ["1d"],
        "start": "2010-01-01", "end": "2012-12-31", "seed": 9,
        "overrides": {"training": {"epochs": 3, "batch_size": 16},
                      "model": {"architecture": {"dropout": 0.0}}},
    })
    job = load_job(path, strategies_root=strategies)
    s = job.strategy
    assert s.symbols == ["NASDAQ"] and s.timeframes == ["1d"] and s.base_timeframe == "1d"
    assert s.start_date.startswith("2010-01-01") and s.end_date.startswith("2012-12-31")
    assert s.training["seed"] == 9 and job.seed == 9
    assert s.training["epochs"] == 3 and s.training["batch_size"] == 16
    assert s.model["dropout"] == 0.0
    assert s.model["hidden_layers"] == [32, 16]  # untouched keys of a merged section stay
    assert s.training["loss"] == "focal"
    # the job's symbols REPLACE the section: no stale multi-symbol list is saved with the model
    assert s.raw["training_data"]["symbols"] == {"mode": "single", "symbol": "NASDAQ"}
    assert {"symbols", "timeframes", "start", "end", "seed"} <= set(job.normalized)


def test_timeframes_replace_a_multi_timeframe_section(roots: tuple[Path, Path]) -> None:
    strategies, _ = roots
    job = load_job({"strategy": "multi_timeframe.yaml", "timeframes": ["4h"],
                    "symbols": "EURUSD"}, strategies_root=strategies)
    assert job.strategy.timeframes == ["4h"] and job.strategy.base_timeframe == "4h"
    assert job.strategy.raw["training_data"]["timeframes"] == {"mode": "single",
                                                               "timeframe": "4h"}
    job = load_job({"strategy": "multi_symbol.yaml", "symbols": ["SP500", "NASDAQ"],
                    "timeframes": ["1d", "1w"]}, strategies_root=strategies)
    assert job.strategy.timeframes == ["1d", "1w"] and job.strategy.base_timeframe == "1d"


def test_host_is_accepted_as_gpu(roots: tuple[Path, Path]) -> None:
    strategies, _ = roots
    job = load_job({"strategy": "rsi_minimal.yaml",
                    "execution": {"mode": "host", "require_gpu": True, "wait_for_gpu": 30}},
                   strategies_root=strategies)
    assert job.execution == {"mode": "gpu", "require_gpu": True, "max_attempts": 3,
                             "wait_for_gpu": 30}


def test_every_job_problem_is_reported_at_once(roots: tuple[Path, Path]) -> None:
    strategies, jobs = roots
    path = write_job(jobs, {
        "strategy": "rsi_minimal.yaml", "symbol": "EURUSD", "symbols": 5, "timeframes": [1],
        "start": 20170501, "seed": "seven", "priority": "high", "overrides": [1],
        "execution": {"mode": "cluster", "require_gpu": "yes", "max_attempts": 0,
                      "retries": 2},
    })
    with pytest.raises(StrategyError) as excinfo:
        load_job(path, strategies_root=strategies)
    errors = errors_of(excinfo)
    for start in ("symbol: unknown job key", "symbols: expected a list", "timeframes: expected",
                  "start: expected a date", "seed: expected an integer",
                  "priority: expected an integer", "overrides: expected a mapping",
                  "execution.mode: 'cluster' is not allowed",
                  "execution.require_gpu: expected true or false",
                  "execution.max_attempts: expected an integer >= 1",
                  "execution.retries: unknown"):
        assert any(e.startswith(start) for e in errors), (start, errors)
    assert len(errors) == 11
    assert str(path) in str(excinfo.value) and "11 errors" in str(excinfo.value)
    assert "allowed: auto, local, gpu" in str(excinfo.value)


def test_strategy_errors_come_with_key_paths(roots: tuple[Path, Path]) -> None:
    strategies, _ = roots
    with pytest.raises(StrategyError) as excinfo:
        load_job({"strategy": "rsi_minimal.yaml",
                  "overrides": {"training": {"epochs": 0},
                                "fuzzy_sets": {"rsi_zone": {"indicator": "rsi_99"}}}},
                 strategies_root=strategies)
    text = str(excinfo.value)
    assert "training.epochs" in text and "fuzzy_sets.rsi_zone.indicator" in text
    assert len(errors_of(excinfo)) >= 2


def test_missing_strategy_and_missing_file(roots: tuple[Path, Path]) -> None:
    strategies, _ = roots
    with pytest.raises(StrategyError, match="strategy: missing"):
        load_job({"seed": 1}, strategies_root=strategies)
    with pytest.raises(StrategyError, match="no file 'nope.yaml' under"):
        load_job({"strategy": "nope.yaml"}, strategies_root=strategies)
    with pytest.raises(StrategyError, match="no strategies root is configured"):
        load_job({"strategy": "rsi_minimal.yaml"})


def test_paths_that_escape_the_strategies_root_are_refused(roots: tuple[Path, Path]) -> None:
    strategies, jobs = roots
    outside = strategies.parent / "outside.yaml"
    shutil.copy(EXAMPLES / "rsi_minimal.yaml", outside)  # a real, valid file: only the path is bad
    (strategies / "link.yaml").symlink_to(outside)
    (strategies / "sub").mkdir()
    for ref in ("../outside.yaml", str(outside), "link.yaml", "sub/../../outside.yaml"):
        for source in ({"strategy": ref}, write_job(jobs, {"strategy": ref})):
            with pytest.raises(StrategyError) as excinfo:
                load_job(source, strategies_root=strategies)
            assert "escapes" in str(excinfo.value), (ref, str(excinfo.value))
    # a symlink that stays inside the root is fine
    (strategies / "alias.yaml").symlink_to(strategies / "rsi_minimal.yaml")
    assert load_job({"strategy": "alias.yaml"}, strategies_root=strategies).strategy.name == (
        "rsi_minimal")
    # so is a subfolder
    shutil.copy(EXAMPLES / "rsi_minimal.yaml", strategies / "sub" / "r.yaml")
    assert load_job({"strategy": "sub/r.yaml"}, strategies_root=strategies).strategy.symbols == [
        "EURUSD"]


def test_not_yaml_not_a_mapping_and_binary_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match=r"(?s)drop\.yaml.*not valid YAML at line 2"):
        load_job(b"strategy: x.yaml\nseed: a: b\n", source_name="drop.yaml")
    with pytest.raises(StrategyError, match="is a list; expected a mapping"):
        load_job(b"- a\n- b\n", source_name="drop.yaml")
    with pytest.raises(StrategyError, match="is empty; expected a mapping"):
        load_job(b"", source_name="drop.yaml")
    with pytest.raises(StrategyError, match="is a str; expected a mapping"):
        load_job(b"just words", source_name="drop.yaml")
    with pytest.raises(StrategyError, match="not a text file"):
        load_job(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00", source_name="image.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(StrategyError, match=r"(?s)binary\.yaml.*not a text file"):
        load_job(binary)
    with pytest.raises(StrategyError, match="cannot read the file"):
        load_job(tmp_path / "absent.yaml")
    # a referenced strategy file that is not a mapping
    root = tmp_path / "root"
    root.mkdir()
    (root / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(StrategyError, match="does not hold a mapping"):
        load_job({"strategy": "list.yaml"}, strategies_root=root)
