"""Unknown keys (issue 18): a near miss of a known key is an error that names the key meant, at
any depth; other unknown keys (ones KTRDR ignores too) are warnings; ``--strict`` makes every
warning an error; all errors of a file come in one report; a typo in an indicator type is one
error, not two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.errors import StrategyError
from pipeline.schema.keys import edit_distance, near_miss
from pipeline.strategy import load_strategy
from tests.test_strategy import base, put

REPO = Path(__file__).resolve().parents[1]


def errors_of(data: dict, **kwargs: object) -> list[str]:
    with pytest.raises(StrategyError) as info:
        load_strategy(data, **kwargs)
    return info.value.errors


@pytest.mark.parametrize(("key", "value", "error"), [
    ("trainig", {"epochs": 5}, "trainig: unknown key; did you mean 'training'?"),
    ("training.epoch", 50, "training.epoch: unknown key; did you mean 'epochs'?"),
    ("model.architecture.hidden_layer", [8], "model.architecture.hidden_layer: unknown key; "
                                             "did you mean 'hidden_layers'?"),
    ("training.labels.zigzag_treshold", 0.02, "training.labels.zigzag_treshold: unknown key; "
                                              "did you mean 'zigzag_threshold'?"),
    ("training.early_stopping.patiance", 3, "training.early_stopping.patiance: unknown key; "
                                            "did you mean 'patience'?"),
    ("nn_inputs.0", {"fuzzy_sett": "rsi_zone"}, "nn_inputs[0].fuzzy_sett: unknown key; did "
                                                "you mean 'fuzzy_set'?"),
    ("fuzzy_sets.rsi_zone", {"indicater": "rsi_14", "low": [0, 30, 50]},
     "fuzzy_sets.rsi_zone.indicater: unknown key; did you mean 'indicator'?"),
    ("indicators.rsi_14.peroid", 10, "indicators.rsi_14.peroid: unknown key; did you mean "
                                     "'period'? (rsi takes period, source)"),
])
def test_a_near_miss_at_any_depth_is_an_error_naming_the_key_meant(
    key: str, value: object, error: str
) -> None:
    assert errors_of(put(base(), key, value)) == [error]


def test_a_near_miss_in_a_context_entry_is_an_error() -> None:
    data = put(base(), "context_data", [{"provider": "fred", "serie": ["DGS2"]}])
    errors = errors_of(data)
    assert "context_data[0].serie: unknown key; did you mean 'series'?" in errors


def test_keys_ktrdr_ignores_stay_warnings_and_fail_in_strict_mode() -> None:
    data = put(base(), "scope", "forex")
    put(data, "decisions.confidence_threshold", 0.6)
    warnings = load_strategy(data).warnings
    assert warnings == ["scope: ignored (not used by this trainer)",
                        "decisions.confidence_threshold: ignored (not used by this trainer)"]
    assert errors_of(data, strict=True) == [w + "; --strict refuses warnings" for w in warnings]


def test_four_mistakes_are_reported_at_once() -> None:
    data = put(base(), "trainig", {"epochs": 5})
    put(data, "model.architecture.hidden_layer", [8])
    put(data, "indicators.macd.fast_period", "twelve")
    put(data, "fuzzy_sets.rsi_zone.low", [50, 30, 0])
    errors = errors_of(data)
    assert len(errors) == 4, errors
    for path in ("trainig:", "model.architecture.hidden_layer:", "indicators.macd.fast_period:",
                 "fuzzy_sets.rsi_zone.low:"):
        assert any(e.startswith(path) for e in errors), (path, errors)


def test_a_typo_in_an_indicator_type_is_one_error() -> None:
    data = put(base(), "indicators.rsi_14.type", "rsii")
    put(data, "nn_inputs", [*data["nn_inputs"], {"raw_indicator": "rsi_14"}])
    errors = errors_of(data)
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "indicators.rsi_14.type: 'rsii' is not an indicator; did you mean 'rsi'? allowed: ")


def test_near_miss_rules() -> None:
    assert edit_distance("epcohs", "epochs") == 1  # a swap is one edit
    assert near_miss("Epochs", ["epochs"]) == "epochs"
    assert near_miss("sed", ["seed"]) == "seed"
    assert near_miss("sd", ["seed"]) is None  # short keys: one edit only
    assert near_miss("method", ["epochs", "momentum", "loss"]) is None


def test_strict_on_the_command_line_refuses_an_ignored_key(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "config/strategies/rsi_minimal.yaml").read_text())
    data["scope"] = "forex"
    path = tmp_path / "scoped.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTRDR_")}
    env.update(PYTHONPATH=str(REPO), KTRDR_CONFIG="/nonexistent/daemon.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "ktrdr_daemon.cli", "train", str(path), "--strict",
         "--models", str(tmp_path / "m")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "scope: ignored (not used by this trainer); --strict refuses warnings" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_a_near_miss_of_a_job_key_names_the_key_meant() -> None:
    from pipeline.job import load_job

    with pytest.raises(StrategyError) as info:
        load_job({"strategy": base(), "overides": {"training": {"epochs": 2}}})
    assert info.value.errors[0].startswith(
        "overides: unknown job key; did you mean 'overrides'? job keys are: strategy, ")


def test_a_near_miss_is_read_as_the_key_meant_for_checking_only() -> None:
    # No second error saying the meant key is missing ...
    data = put(base(), "fuzzy_sets.rsi_zone.low", {"type": "triangular", "paramters": [0, 5, 9]})
    assert errors_of(data) == [
        "fuzzy_sets.rsi_zone.low.paramters: unknown key; did you mean 'parameters'?"]
    # ... and a bad value under the typo is reported too, at the key the file has.
    errors = errors_of(put(base(), "model.architecture.dropot", 2))
    assert errors == ["model.architecture.dropot: 2 is not allowed; a number with "
                      "0 <= dropout < 1",
                      "model.architecture.dropot: unknown key; did you mean 'dropout'?"]
