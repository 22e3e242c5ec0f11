"""Strategy loading: every validation rule, defaults, overrides, and the shipped example files.

Each error test checks that the message names the key path and says what is allowed, because
that message is all a user sees in ``result.json``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import StrategyError
from pipeline.strategy import Strategy, deep_merge, is_v3_strategy, load_strategy, sanitize_name

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "config" / "strategies").glob("*.yaml"))
V3_FULL = ROOT / "tests" / "data" / "ktrdr_v3_full.yaml"


def base() -> dict[str, Any]:
    """A small valid strategy every test mutates."""
    return {
        "name": "rsi_test",
        "training_data": {
            "symbols": {"mode": "single", "symbol": "EURUSD"},
            "timeframes": {"mode": "single", "timeframe": "1h"},
        },
        "indicators": {
            "rsi_14": {"type": "rsi", "period": 14},
            "macd": {"type": "macd"},
        },
        "fuzzy_sets": {
            "rsi_zone": {"indicator": "rsi_14", "low": [0, 30, 50], "high": [50, 70, 100]},
            "macd_hist": {"indicator": "macd.histogram", "down": [-1, -0.5, 0]},
        },
        "nn_inputs": [
            {"fuzzy_set": "rsi_zone", "timeframes": "all"},
            {"fuzzy_set": "macd_hist", "timeframes": "all"},
        ],
    }


def put(data: dict, path: str, value: Any) -> dict:
    """Set a dotted path (``nn_inputs.0.timeframes``), creating mappings on the way."""
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


COST = {"round_trip_cost": 0.003, "min_edge_multiplier": 1.5}


def regression(data: dict) -> dict:
    """``data`` as a KTRDR regression strategy: forward_return labels, huber, a cost model."""
    put(data, "decisions", {"output_format": "regression", "cost_model": dict(COST)})
    put(data, "training.labels", {"source": "forward_return", "horizon": 20})
    return put(data, "training.loss", "huber")


def drop(data: dict, path: str) -> dict:
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[key]
    del node[last]
    return data


def errors_for(data: dict, **kwargs: Any) -> list[str]:
    with pytest.raises(StrategyError) as info:
        load_strategy(data, **kwargs)
    return info.value.errors


def one_error(data: dict, **kwargs: Any) -> str:
    errors = errors_for(data, **kwargs)
    assert len(errors) == 1, errors
    return errors[0]


# ------------------------------------------------------------------ valid input and defaults


def test_base_loads_with_defaults_filled() -> None:
    s = load_strategy(base())
    assert isinstance(s, Strategy)
    assert (s.name, s.source) == ("rsi_test", "<inline>")
    assert (s.symbols, s.timeframes, s.base_timeframe) == (["EURUSD"], ["1h"], "1h")
    assert (s.history_required, s.start_date, s.end_date) == (200, None, None)
    assert s.indicators == {
        "rsi_14": {"type": "rsi", "period": 14, "source": "close"},
        "macd": {"type": "macd", "fast_period": 12, "slow_period": 26, "signal_period": 9,
                 "source": "close"},
    }  # fmt: skip
    assert s.fuzzy_sets["rsi_zone"] == {
        "indicator": "rsi_14",
        "memberships": [
            {"name": "low", "type": "triangular", "parameters": [0.0, 30.0, 50.0]},
            {"name": "high", "type": "triangular", "parameters": [50.0, 70.0, 100.0]},
        ],
    }
    assert s.nn_inputs == [
        {"fuzzy_set": "rsi_zone", "timeframes": ["1h"]},
        {"fuzzy_set": "macd_hist", "timeframes": ["1h"]},
    ]
    assert s.model == {"type": "mlp", "hidden_layers": [64, 32], "dropout": 0.2,
                       "activation": "relu"}  # fmt: skip
    assert s.training == {
        "epochs": 100, "batch_size": 32, "learning_rate": 0.001, "loss": "cross_entropy",
        "focal_gamma": 2.0,
        "labels": {"source": "zigzag", "zigzag_threshold": 0.02, "label_lookahead": 10},
        "data_split": {"train": 0.7, "validation": 0.15, "test": 0.15},
        "early_stopping": None, "seed": None,
        # the keys KTRDR ignores and we apply, with KTRDR's defaults for a classifier
        "huber_delta": 0.01, "optimizer": "adam", "weight_decay": 1e-4, "momentum": 0.9,
        "gradient_clip": 1.0, "lr_scheduler": None, "output_format": "classification",
    }  # fmt: skip
    assert s.warnings == []


def test_indicator_type_is_case_insensitive_and_canonical() -> None:
    data = put(base(), "indicators.bb", {"type": "BBands", "multiplier": 2})
    data["nn_inputs"].append({"raw_indicator": "bb.upper", "timeframes": ["1h"]})
    s = load_strategy(data)
    assert s.indicators["bb"] == {"type": "bollingerbands", "period": 20, "multiplier": 2.0,
                                  "source": "close"}  # fmt: skip
    assert isinstance(s.indicators["bb"]["multiplier"], float)  # an int is fine for a float
    assert s.nn_inputs[-1] == {"raw_indicator": "bb.upper", "normalization": "none",
                               "timeframes": ["1h"]}  # fmt: skip


def test_membership_long_forms_and_bare_multi_output_id() -> None:
    data = base()
    data["fuzzy_sets"]["macd_hist"] = {
        "indicator": "macd",  # the first output
        "flat": {"type": "Gaussian", "parameters": [0, 0.5]},
        "up": {"type": "trapezoidal", "parameters": [0, 0.5, 2, 3]},
    }
    members = load_strategy(data).fuzzy_sets["macd_hist"]["memberships"]
    assert members == [
        {"name": "flat", "type": "gaussian", "parameters": [0.0, 0.5]},
        {"name": "up", "type": "trapezoidal", "parameters": [0.0, 0.5, 2.0, 3.0]},
    ]


def test_symbols_alias_of_list() -> None:
    data = put(base(), "training_data.symbols", {"mode": "multi_symbol", "symbols": ["A", "B"]})
    assert load_strategy(data).symbols == ["A", "B"]


def test_plain_symbol_list_and_multi_timeframe_base_default() -> None:
    data = put(base(), "training_data.symbols", ["SP500", "NASDAQ"])
    put(data, "training_data.timeframes", {"mode": "multi_timeframe", "list": ["4h", "1h"]})
    s = load_strategy(data)
    assert s.symbols == ["SP500", "NASDAQ"]
    assert (s.timeframes, s.base_timeframe) == (["4h", "1h"], "4h")
    assert s.nn_inputs[0]["timeframes"] == ["4h", "1h"]  # all = the training list, in order


def test_single_timeframe_mode_with_a_list_of_one() -> None:
    data = put(base(), "training_data.timeframes", {"mode": "single", "list": ["1d"]})
    s = load_strategy(data)
    assert (s.timeframes, s.base_timeframe) == (["1d"], "1d")


def test_dates_parse_including_yaml_dates_and_date_range_alias() -> None:
    import datetime as dt

    data = put(base(), "training_data.start_date", dt.date(2017, 5, 1))
    put(data, "training_data.end_date", "2018-01-31T12:00:00")
    s = load_strategy(data)
    assert (s.start_date, s.end_date) == ("2017-05-01", "2018-01-31T12:00:00")
    json.dumps(s.raw)  # raw is saved as config.json: the YAML date became text
    data = put(base(), "training_data.date_range", {"start": "2017-06-01", "end": "2017-12-01"})
    assert load_strategy(data).start_date == "2017-06-01"


def test_any_minute_hour_day_or_week_timeframe_and_a_finer_one_than_the_base() -> None:
    data = put(base(), "training_data.timeframes",
               {"mode": "multi_timeframe", "list": ["5m", "1h", "3h", "2d", "2w"],
                "base_timeframe": "1h"})
    s = load_strategy(data)
    assert (s.timeframes, s.base_timeframe) == (["5m", "1h", "3h", "2d", "2w"], "1h")
    bad = put(base(), "training_data.timeframes", {"mode": "multi_timeframe",
                                                   "list": ["1h", "1y", "0m", "1000000m"]})
    with pytest.raises(StrategyError) as info:
        load_strategy(bad)
    assert [e.split(" is")[0] for e in info.value.errors] == [
        "training_data.timeframes.list: '1y'", "training_data.timeframes.list: '0m'",
        "training_data.timeframes.list: '1000000m'"]


def test_nn_input_timeframe_subset_and_normalization() -> None:
    data = put(
        base(),
        "training_data.timeframes",
        {"mode": "multi_timeframe", "list": ["1h", "4h"], "base_timeframe": "1h"},
    )
    data["nn_inputs"].append({"raw_indicator": "rsi_14", "timeframes": ["4h"],
                              "normalization": "zscore"})  # fmt: skip
    s = load_strategy(data)
    assert s.nn_inputs[-1] == {"raw_indicator": "rsi_14", "normalization": "zscore",
                               "timeframes": ["4h"]}  # fmt: skip


def test_triple_barrier_labels_with_ktrdrs_unread_keys_as_aliases() -> None:
    """trend_tb_gaussian_signal_v1's keys: KTRDR drops all four and trains with H = 50."""
    data = put(base(), "training.labels", {
        "source": "triple_barrier", "profit_target_atr": 2.0, "stop_loss_atr": 1.5,
        "max_holding_bars": 24, "atr_period": 14})  # fmt: skip
    put(data, "decisions.num_classes", 3)
    s = load_strategy(data)
    assert s.training["labels"] == {
        "source": "triple_barrier", "pt_multiplier": 2.0, "sl_multiplier": 1.5,
        "max_holding_period": 24, "vol_span": 14, "vol_method": "atr", "compute_weights": False,
        "cusum_threshold": None, "cusum_multiplier": 0.5}  # fmt: skip
    assert "training.labels.max_holding_bars: read as max_holding_period (KTRDR ignores this "\
        "key and trains with max_holding_period = 50)" in s.warnings


def test_regime_and_context_labels_load_with_their_classes() -> None:
    regime = put(put(base(), "training.labels", {"source": "regime", "atr_period": 10,
                                                 "horizon": 24}), "decisions.num_classes", 4)
    s = load_strategy(regime)
    assert s.training["labels"]["atr_period"] == 10 and s.training["labels"]["source"] == "regime"
    assert ("training.labels.horizon: accepted; it has no effect (KTRDR ignores it too)"
            in s.warnings)
    context = put(base(), "training.labels", {"source": "context", "horizon": 3})
    assert load_strategy(context).training["labels"] == {
        "source": "context", "horizon": 3, "bullish_threshold": 0.005,
        "bearish_threshold": -0.005}


def test_training_values_and_early_stopping() -> None:
    data = put(base(), "training", {
        "epochs": 5, "batch_size": 16, "learning_rate": 1, "loss": "focal", "focal_gamma": 1,
        "labels": {"zigzag_threshold": 0.05}, "seed": 7,
        "data_split": {"train": 0.6, "validation": 0.2, "test": 0.2},
        "early_stopping": {"patience": 3},
    })  # fmt: skip
    t = load_strategy(data).training
    assert (t["epochs"], t["batch_size"], t["learning_rate"], t["loss"]) == (5, 16, 1.0, "focal")
    assert t["labels"] == {"source": "zigzag", "zigzag_threshold": 0.05, "label_lookahead": 10}
    assert t["early_stopping"] == {"patience": 3, "min_delta": 0.0}
    assert t["seed"] == 7
    put(data, "training.early_stopping", {"enabled": False, "patience": 3})
    assert load_strategy(data).training["early_stopping"] is None


def test_name_is_sanitised_for_the_model_store() -> None:
    assert load_strategy(put(base(), "name", "my strat/v1 (ü)")).name == "my_strat_v1____"
    assert sanitize_name("..") == "_."
    assert sanitize_name("a.b-c_d") == "a.b-c_d"
    assert sanitize_name(".hidden") == "_hidden"


def test_mapping_source_is_not_modified() -> None:
    data = base()
    before = copy.deepcopy(data)
    load_strategy(data, overrides={"training": {"epochs": 3}})
    assert data == before


def test_raw_keeps_unknown_keys_and_overrides() -> None:
    data = put(base(), "scope", "universal")
    s = load_strategy(data, overrides={"training": {"epochs": 3}})
    assert s.raw["scope"] == "universal"
    assert s.raw["training"] == {"epochs": 3}
    assert "scope: ignored (not used by this trainer)" in s.warnings


# ------------------------------------------------------------------ overrides


def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    a = {"x": {"y": 1, "z": [1, 2]}, "k": 1}
    b = {"x": {"z": [3], "w": {"v": 1}}, "k": {"new": True}}
    merged = deep_merge(a, b)
    assert merged == {"x": {"y": 1, "z": [3], "w": {"v": 1}}, "k": {"new": True}}
    assert a == {"x": {"y": 1, "z": [1, 2]}, "k": 1}  # inputs untouched
    merged["x"]["w"]["v"] = 2
    assert b["x"]["w"]["v"] == 1  # no shared sub-objects


def test_overrides_merge_before_validation() -> None:
    bad = put(base(), "training", {"epochs": 0, "batch_size": 8})
    s = load_strategy(bad, overrides={"training": {"epochs": 4}})  # fixes the error
    assert (s.training["epochs"], s.training["batch_size"]) == (4, 8)
    error = one_error(base(), overrides={"model": {"architecture": {"dropout": 2}}})
    assert error.startswith("model.architecture.dropout:")


def test_job_style_overrides_switch_symbol_and_timeframe_modes() -> None:
    data = put(
        base(),
        "training_data.timeframes",
        {"mode": "multi_timeframe", "list": ["1h", "4h"], "base_timeframe": "1h"},
    )
    overrides = {
        "training_data": {
            "symbols": {"mode": "multi_symbol", "list": ["A", "B"]},
            "timeframes": {"mode": "single", "timeframe": "1d"},
        }
    }
    s = load_strategy(data, overrides=overrides)
    assert (s.symbols, s.timeframes, s.base_timeframe) == (["A", "B"], ["1d"], "1d")


def test_overrides_must_be_a_mapping() -> None:
    assert one_error(base(), overrides=[1]).startswith("overrides:")  # type: ignore[arg-type]


# ------------------------------------------------------------------ one test per rule


# fmt: off
RULES: list[tuple[str, Callable[[dict], dict], list[str]]] = [
    ("name missing", lambda d: drop(d, "name"), ["name:", "required"]),
    ("name not text", lambda d: put(d, "name", 12), ["name:", "12", "text"]),
    ("training_data missing", lambda d: drop(d, "training_data"),
     ["training_data:", "symbols and timeframes"]),
    ("symbols missing", lambda d: drop(d, "training_data.symbols"),
     ["training_data.symbols:", "mode: single", "multi_symbol"]),
    ("symbols mode", lambda d: put(d, "training_data.symbols.mode", "many"),
     ["training_data.symbols.mode:", "'many'", "single, multi_symbol"]),
    ("symbols empty list",
     lambda d: put(d, "training_data.symbols", {"mode": "multi_symbol", "list": []}),
     ["training_data.symbols.list:", "non-empty list"]),
    ("symbol not text", lambda d: put(d, "training_data.symbols.symbol", 5),
     ["training_data.symbols.symbol:", "symbol name"]),
    ("single with several",
     lambda d: put(d, "training_data.symbols", {"mode": "single", "list": ["A", "B"]}),
     ["training_data.symbols.mode:", "multi_symbol"]),
    ("symbol escapes", lambda d: put(d, "training_data.symbols.symbol", "../etc"),
     ["training_data.symbols.symbol:", "'../etc'", "letters, digits"]),
    ("symbol twice", lambda d: put(d, "training_data.symbols", ["A", "A"]),
     ["training_data.symbols.list:", "'A' is listed twice"]),
    ("timeframes missing", lambda d: drop(d, "training_data.timeframes"),
     ["training_data.timeframes:", "missing", "multi_timeframe"]),
    ("timeframes mode", lambda d: put(d, "training_data.timeframes.mode", "multi"),
     ["training_data.timeframes.mode:", "single, multi_timeframe"]),
    ("timeframe spelling", lambda d: put(d, "training_data.timeframes.timeframe", "1hour"),
     ["training_data.timeframes.timeframe:", "'1hour'", "m, h, d or w"]),
    ("base not in list",
     lambda d: put(d, "training_data.timeframes",
                   {"mode": "multi_timeframe", "list": ["1h", "4h"], "base_timeframe": "1d"}),
     ["training_data.timeframes.base_timeframe:", "'1d'", "allowed: 1h, 4h"]),
    ("history too short", lambda d: put(d, "training_data.history_required", 49),
     ["training_data.history_required:", "49", ">= 50"]),
    ("history bool", lambda d: put(d, "training_data.history_required", True),
     ["training_data.history_required:", "true", ">= 50"]),
    ("bad date", lambda d: put(d, "training_data.start_date", "last year"),
     ["training_data.start_date:", "'last year'", "YYYY-MM-DD"]),
    ("empty range",
     lambda d: put(put(d, "training_data.start_date", "2018-01-01"),
                   "training_data.end_date", "2017-01-01"),
     ["training_data.end_date:", "not after start_date"]),
    ("bad date_range", lambda d: put(d, "training_data.date_range", {"start": "soon"}),
     ["training_data.date_range.start:", "YYYY-MM-DD"]),
    ("no indicators", lambda d: put(d, "indicators", {}), ["indicators:", "at least one"]),
    ("indicator type", lambda d: put(d, "indicators.rsi_14.type", "rsx"),
     ["indicators.rsi_14.type:", "'rsx' is not an indicator", "allowed:", "rsi", "macd", "adx"]),
    ("indicator type missing", lambda d: drop(d, "indicators.rsi_14.type"),
     ["indicators.rsi_14.type:", "missing", "allowed:"]),
    ("indicator not mapping", lambda d: put(d, "indicators.rsi_14", "rsi"),
     ["indicators.rsi_14:", "mapping"]),
    ("indicator id with dot",
     lambda d: deep_merge(d, {"indicators": {"rsi.14": {"type": "rsi"}}}),
     ["indicators.rsi.14:", "letters, digits"]),
    ("int param as text", lambda d: put(d, "indicators.rsi_14.period", "14"),
     ["indicators.rsi_14.period:", "'14'", "whole number from 2 to 100"]),
    ("int param is bool", lambda d: put(d, "indicators.rsi_14.period", True),
     ["indicators.rsi_14.period:", "true", "whole number"]),
    ("int param fraction", lambda d: put(d, "indicators.rsi_14.period", 14.5),
     ["indicators.rsi_14.period:", "14.5", "whole number"]),
    ("int param below bound", lambda d: put(d, "indicators.rsi_14.period", 1),
     ["indicators.rsi_14.period:", "1 is not allowed", "from 2 to 100"]),
    ("int param above bound", lambda d: put(d, "indicators.rsi_14.period", 101),
     ["indicators.rsi_14.period:", "from 2 to 100"]),
    ("int param as float", lambda d: put(d, "indicators.rsi_14.period", 14.0),
     ["indicators.rsi_14.period:", "14.0 is not allowed", "whole number"]),
    ("float param out of bounds", lambda d: put(d, "indicators.bb", {"type": "bbands",
                                                                      "multiplier": 0}),
     ["indicators.bb.multiplier:", "a number > 0 and <= 10"]),
    ("choice param", lambda d: put(d, "indicators.d", {"type": "distancefromma",
                                                        "ma_type": "sma"}),
     ["indicators.d.ma_type:", "'sma'", "one of SMA, EMA"]),
    ("float param text", lambda d: put(d, "indicators.bb", {"type": "bbands", "multiplier": "2"}),
     ["indicators.bb.multiplier:", "a number"]),
    ("bool param int", lambda d: put(d, "indicators.e", {"type": "ema", "adjust": 1}),
     ["indicators.e.adjust:", "true or false"]),
    ("source", lambda d: put(d, "indicators.rsi_14.source", "hl2"),
     ["indicators.rsi_14.source:", "'hl2'", "open, high, low, close, volume"]),
    ("fuzzy unknown indicator", lambda d: put(d, "fuzzy_sets.rsi_zone.indicator", "rsi_7"),
     ["fuzzy_sets.rsi_zone.indicator: 'rsi_7' is not an indicator; "
      "indicators are: rsi_14, macd"]),
    ("fuzzy indicator missing", lambda d: drop(d, "fuzzy_sets.rsi_zone.indicator"),
     ["fuzzy_sets.rsi_zone.indicator:", "indicator id"]),
    ("fuzzy bad output", lambda d: put(d, "fuzzy_sets.macd_hist.indicator", "macd.hist"),
     ["fuzzy_sets.macd_hist.indicator:", "no output 'hist'", "line, signal, histogram"]),
    ("fuzzy output of single", lambda d: put(d, "fuzzy_sets.rsi_zone.indicator", "rsi_14.value"),
     ["fuzzy_sets.rsi_zone.indicator:", "single output", "'rsi_14'"]),
    ("fuzzy set not mapping", lambda d: put(d, "fuzzy_sets.rsi_zone", [0, 1, 2]),
     ["fuzzy_sets.rsi_zone:", "mapping"]),
    ("no memberships", lambda d: put(d, "fuzzy_sets.rsi_zone", {"indicator": "rsi_14"}),
     ["fuzzy_sets.rsi_zone:", "no memberships", "at least one"]),
    ("membership count", lambda d: put(d, "fuzzy_sets.rsi_zone.low", [0, 30]),
     ["fuzzy_sets.rsi_zone.low:", "triangular takes 3 parameters, got 2"]),
    ("trapezoid count",
     lambda d: put(d, "fuzzy_sets.rsi_zone.low", {"type": "trapezoidal", "parameters": [0, 1, 2]}),
     ["fuzzy_sets.rsi_zone.low:", "trapezoidal takes 4"]),
    ("membership type",
     lambda d: put(d, "fuzzy_sets.rsi_zone.low", {"type": "sigmoid", "parameters": [0, 1]}),
     ["fuzzy_sets.rsi_zone.low.type:", "'sigmoid'", "triangular, trapezoidal, gaussian"]),
    ("membership not numbers", lambda d: put(d, "fuzzy_sets.rsi_zone.low", [0, "a", 50]),
     ["fuzzy_sets.rsi_zone.low:", "must all be numbers"]),
    ("membership bool", lambda d: put(d, "fuzzy_sets.rsi_zone.low", [0, True, 50]),
     ["fuzzy_sets.rsi_zone.low:", "numbers"]),
    ("membership order", lambda d: put(d, "fuzzy_sets.rsi_zone.low", [50, 30, 0]),
     ["fuzzy_sets.rsi_zone.low:", "out of order", "a <= b <= c"]),
    ("trapezoid order",
     lambda d: put(d, "fuzzy_sets.rsi_zone.low",
                   {"type": "trapezoidal", "parameters": [0, 1, 3, 2]}),
     ["fuzzy_sets.rsi_zone.low:", "a <= b <= c <= d"]),
    ("gaussian sigma",
     lambda d: put(d, "fuzzy_sets.rsi_zone.low", {"type": "gaussian", "parameters": [50, 0]}),
     ["fuzzy_sets.rsi_zone.low:", "sigma must be > 0"]),
    ("membership scalar", lambda d: put(d, "fuzzy_sets.rsi_zone.low", 5),
     ["fuzzy_sets.rsi_zone.low:", "[a, b, c]"]),
    ("input_transform",
     lambda d: put(d, "fuzzy_sets.rsi_zone.input_transform", {"type": "price_ratio"}),
     ["fuzzy_sets.rsi_zone.input_transform:", "not supported"]),
    ("nn_inputs empty", lambda d: put(d, "nn_inputs", []), ["nn_inputs:", "non-empty list"]),
    ("nn_input unknown set", lambda d: put(d, "nn_inputs.0.fuzzy_set", "rsi_fast"),
     ["nn_inputs[0].fuzzy_set:", "'rsi_fast' is not a fuzzy set", "rsi_zone, macd_hist"]),
    ("nn_input both kinds", lambda d: put(d, "nn_inputs.0.raw_indicator", "rsi_14"),
     ["nn_inputs[0]:", "exactly one of fuzzy_set or raw_indicator"]),
    ("nn_input raw unknown", lambda d: put(d, "nn_inputs.0", {"raw_indicator": "rsi_7"}),
     ["nn_inputs[0].raw_indicator:", "'rsi_7' is not an indicator", "rsi_14, macd"]),
    ("nn_input raw output", lambda d: put(d, "nn_inputs.0", {"raw_indicator": "macd.x"}),
     ["nn_inputs[0].raw_indicator:", "no output 'x'", "histogram"]),
    ("nn_input timeframe", lambda d: put(d, "nn_inputs.1.timeframes", ["1h", "1d"]),
     ["nn_inputs[1].timeframes:", "'1d' is not a training timeframe", "all or a list from 1h"]),
    ("nn_input timeframes type", lambda d: put(d, "nn_inputs.1.timeframes", 4),
     ["nn_inputs[1].timeframes:", "all or a list"]),
    ("normalization",
     lambda d: put(d, "nn_inputs.0", {"raw_indicator": "rsi_14", "normalization": "robust"}),
     ["nn_inputs[0].normalization:", "'robust'", "minmax, zscore, none"]),
    ("duplicate input", lambda d: put(d, "nn_inputs.1", {"fuzzy_set": "rsi_zone"}),
     ["nn_inputs[1]:", "already an input"]),
    ("lstm without length", lambda d: put(d, "model.type", "lstm"),
     ["model.architecture.sequence_length: required for model.type lstm"]),
    ("lstm hidden size", lambda d: put(put(d, "model.type", "lstm"), "model.architecture",
                                       {"sequence_length": 5, "hidden_size": 0}),
     ["model.architecture.hidden_size:", "whole number >= 1"]),
    ("model type", lambda d: put(d, "model.type", "cnn"),
     ["model.type:", "'cnn'", "mlp, lstm, gru"]),
    ("hidden layers", lambda d: put(d, "model.architecture.hidden_layers", [64, 0]),
     ["model.architecture.hidden_layers:", "whole numbers > 0"]),
    ("dropout", lambda d: put(d, "model.architecture.dropout", 1.0),
     ["model.architecture.dropout:", "0 <= dropout < 1"]),
    ("activation", lambda d: put(d, "model.architecture.activation", "gelu"),
     ["model.architecture.activation:", "relu, tanh, sigmoid, leaky_relu"]),
    ("model not mapping", lambda d: put(d, "model", "mlp"), ["model:", "mapping"]),
    ("output format", lambda d: put(d, "decisions.output_format", "ranking"),
     ["decisions.output_format:", "'ranking'", "classification, regression"]),
    ("regression from zigzag", lambda d: put(put(d, "decisions.output_format", "regression"),
                                             "decisions.cost_model", COST),
     ["training.labels.source:", "'zigzag' gives classification targets",
      "decisions.output_format is regression", "use a regression source: forward_return"]),
    ("regression without cost model", lambda d: put(put(d, "decisions.output_format",
                                                        "regression"), "training.labels",
                                                    {"source": "forward_return"}),
     ["decisions.cost_model:", "required for a regression model", "round_trip_cost"]),
    ("cost model number", lambda d: put(regression(d), "decisions.cost_model.round_trip_cost", 0),
     ["decisions.cost_model.round_trip_cost:", "0 is not allowed", "> 0"]),
    ("cost model key", lambda d: put(regression(d), "decisions.cost_model",
                                     {"round_trip_cost": 0.003}),
     ["decisions.cost_model.min_edge_multiplier:", "missing"]),
    ("regression loss", lambda d: put(regression(d), "training.loss", "focal"),
     ["training.loss:", "'focal'", "a classification loss", "allowed: huber, mse"]),
    ("huber delta", lambda d: put(regression(d), "training.huber_delta", 0),
     ["training.huber_delta:", "> 0"]),
    ("horizon", lambda d: put(regression(d), "training.labels.horizon", 0),
     ["training.labels.horizon:", ">= 1"]),
    ("num classes", lambda d: put(d, "decisions.num_classes", 2),
     ["decisions.num_classes:", "3 (BUY, HOLD, SELL)"]),
    ("epochs", lambda d: put(d, "training.epochs", 0), ["training.epochs:", ">= 1"]),
    ("batch size bool", lambda d: put(d, "training.batch_size", True),
     ["training.batch_size:", "whole number >= 1"]),
    ("learning rate", lambda d: put(d, "training.learning_rate", 0),
     ["training.learning_rate:", "> 0"]),
    ("loss", lambda d: put(d, "training.loss", "mse"),
     ["training.loss:", "'mse'", "a regression loss", "cross_entropy, focal"]),
    ("optimizer", lambda d: put(d, "training.optimizer", "adagrad"),
     ["training.optimizer:", "'adagrad'", "adam, adamw, sgd, rmsprop"]),
    ("weight decay", lambda d: put(d, "training.weight_decay", -0.1),
     ["training.weight_decay:", ">= 0"]),
    ("momentum", lambda d: put(d, "training.momentum", 1.5),
     ["training.momentum:", "0 <= momentum < 1"]),
    ("gradient clip", lambda d: put(d, "training.gradient_clip", -1),
     ["training.gradient_clip:", "0 or false for no clipping"]),
    ("gradient clip text", lambda d: put(d, "training.gradient_clip", "1.0"),
     ["training.gradient_clip:", "'1.0'", "a number > 0"]),
    ("lr scheduler", lambda d: put(d, "training.lr_scheduler", "cosine"),
     ["training.lr_scheduler:", "'cosine'", "true, false, or"]),
    ("lr scheduler type", lambda d: put(d, "training.lr_scheduler", {"type": "cosine"}),
     ["training.lr_scheduler.type:", "'cosine'", "step, exponential, reduce_on_plateau"]),
    ("lr scheduler step size", lambda d: put(d, "training.lr_scheduler",
                                             {"type": "step", "step_size": 0}),
     ["training.lr_scheduler.step_size:", "whole number >= 1"]),
    ("lr scheduler factor", lambda d: put(d, "training.lr_scheduler",
                                          {"type": "reduce_on_plateau", "factor": 1.5}),
     ["training.lr_scheduler.factor:", "0 < factor < 1"]),
    ("lr scheduler gamma", lambda d: put(d, "training.lr_scheduler",
                                         {"type": "exponential", "gamma": -1}),
     ["training.lr_scheduler.gamma:", "> 0"]),
    ("focal gamma", lambda d: put(d, "training.focal_gamma", -1),
     ["training.focal_gamma:", ">= 0"]),
    ("label source", lambda d: put(d, "training.labels.source", "forward_return"),
     ["training.labels.source:", "'forward_return' gives regression targets",
      "decisions.output_format is classification",
      "use a classification source: zigzag, triple_barrier, regime, context"]),
    ("label source typo", lambda d: put(d, "training.labels.source", "triple-barrier"),
     ["training.labels.source:", "'triple-barrier'", "allowed: zigzag, triple_barrier"]),
    ("holding period",
     lambda d: put(d, "training.labels", {"source": "triple_barrier", "max_holding_period": 2.5}),
     ["training.labels.max_holding_period:", "2.5", "whole number >= 1"]),
    ("regime classes", lambda d: put(put(d, "training.labels", {"source": "regime"}),
                                     "decisions.num_classes", 3),
     ["decisions.num_classes:", "4 (TRENDING_UP, TRENDING_DOWN, RANGING, VOLATILE)"]),
    ("zigzag threshold", lambda d: put(d, "training.labels.zigzag_threshold", 2.5),
     ["training.labels.zigzag_threshold:", "0 < x < 1"]),
    ("label lookahead", lambda d: put(d, "training.labels.label_lookahead", 0),
     ["training.labels.label_lookahead:", ">= 1"]),
    ("split sum", lambda d: put(d, "training.data_split", {"train": 0.8}),
     ["training.data_split:", "= 1.1", "add up to 1"]),
    ("split part",
     lambda d: put(d, "training.data_split", {"train": 1.0, "validation": 0, "test": 0}),
     ["training.data_split.validation:", "0 < x < 1"]),
    ("patience", lambda d: put(d, "training.early_stopping", {"patience": 0}),
     ["training.early_stopping.patience:", ">= 1"]),
    ("min delta", lambda d: put(d, "training.early_stopping", {"min_delta": -0.1}),
     ["training.early_stopping.min_delta:", ">= 0"]),
    ("early stopping type", lambda d: put(d, "training.early_stopping", 5),
     ["training.early_stopping:", "patience"]),
    ("seed", lambda d: put(d, "training.seed", "abc"),
     ["training.seed:", "'abc'", "whole number"]),
    ("seed bool", lambda d: put(d, "training.seed", True), ["training.seed:", "whole number"]),
    ("seed negative", lambda d: put(d, "training.seed", -1), ["training.seed:", "from 0 to"]),
    ("nn_input set not text", lambda d: put(d, "nn_inputs.0.fuzzy_set", ["rsi_zone"]),
     ["nn_inputs[0].fuzzy_set:", "is not a fuzzy set", "rsi_zone, macd_hist"]),
]
# fmt: on


@pytest.mark.parametrize(("mutate", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_names_the_key_and_what_is_allowed(
    mutate: Callable[[dict], dict], expected: list[str]
) -> None:
    errors = errors_for(mutate(base()))
    path = expected[0].split(":")[0]
    matching = [e for e in errors if e.startswith(path + ":")]
    assert matching, errors
    assert any(all(part in e for part in expected) for e in matching), errors


def test_all_errors_are_reported_together() -> None:
    data = put(base(), "training.epochs", 0)
    put(data, "fuzzy_sets.rsi_zone.indicator", "rsi_7")
    put(data, "model.type", "transformer")
    put(data, "training_data.history_required", 10)
    with pytest.raises(StrategyError) as info:
        load_strategy(data)
    errors = info.value.errors
    assert len(errors) == 4, errors
    for prefix in (
        "training.epochs:",
        "fuzzy_sets.rsi_zone.indicator:",
        "model.type:",
        "training_data.history_required:",
    ):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert "4 errors" in str(info.value)
    assert errors_for(drop(base(), "training_data")) == [
        "training_data: missing; required: symbols and timeframes"
    ]
    assert info.value.source == "<inline>"


def test_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "empty.yaml").write_text("")
    for name, kind in (("list.yaml", "list"), ("empty.yaml", "empty")):
        with pytest.raises(StrategyError) as info:
            load_strategy(tmp_path / name)
        assert f"is {kind}, not a mapping" in info.value.errors[0]
        assert info.value.source == str(tmp_path / name)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(StrategyError, match="not valid YAML"):
        load_strategy(tmp_path / "bad.yaml")
    with pytest.raises(StrategyError, match="cannot read"):
        load_strategy(tmp_path / "absent.yaml")


def test_yaml_tags_are_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("name: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(StrategyError, match="not valid YAML"):
        load_strategy(tmp_path / "evil.yaml")


def test_non_v3_file_says_what_makes_a_v3_file() -> None:
    data = put(base(), "indicators", [{"name": "rsi", "period": 14}])
    drop(data, "nn_inputs")
    errors = errors_for(data)
    assert len(errors) == 1, errors
    assert "not a KTRDR v3 strategy" in errors[0]
    assert "`indicators` is a list" in errors[0] and "`nn_inputs` is missing" in errors[0]
    assert "mapping of id -> {type, params}" in errors[0]
    assert is_v3_strategy(base()) and not is_v3_strategy(data)
    assert not is_v3_strategy(drop(base(), "nn_inputs"))


# ------------------------------------------------------------------ warnings and strict mode


def test_unknown_indicator_params_warn_and_fail_in_strict_mode() -> None:
    data = put(base(), "indicators.macd", {"type": "macd", "fast": 12, "slow": 26, "signal": 9})
    s = load_strategy(data)
    assert s.indicators["macd"]["fast_period"] == 12  # the default: the given values are unused
    assert s.warnings == [
        "indicators.macd: parameters fast, slow, signal are not used by macd (it takes "
        "fast_period, slow_period, signal_period, source); KTRDR ignores them too"
    ]
    error = one_error(data, strict=True)
    assert error.startswith("indicators.macd: parameters fast, slow, signal are not used by macd")
    single = put(base(), "indicators.rsi_14.length", 3)
    assert "parameter length is not used by rsi" in load_strategy(single).warnings[0]


def test_unknown_keys_inside_sections_warn() -> None:
    data = put(base(), "training.fitness_metrics", ["sharpe"])
    put(data, "model.architecture.output_activation", "softmax")
    put(data, "training_data.symbols.group", "forex")
    put(data, "nn_inputs.0.normalization", "minmax")
    warnings = load_strategy(data).warnings
    for key in (
        "training.fitness_metrics",
        "model.architecture.output_activation",
        "training_data.symbols.group",
        "nn_inputs[0].normalization",
    ):
        assert f"{key}: ignored (not used by this trainer)" in warnings


def test_unused_definitions_warn() -> None:
    data = put(base(), "indicators.atr", {"type": "atr"})
    put(data, "fuzzy_sets.spare", {"indicator": "rsi_14", "mid": [40, 50, 60]})
    warnings = load_strategy(data).warnings
    assert "indicators.atr: not used by any nn_input; it is not a feature" in warnings
    assert "fuzzy_sets.spare: not used by any nn_input; it is not a feature" in warnings


def test_ktrdr_v3_full_file_loads_with_a_warning_per_ignored_key() -> None:
    s = load_strategy(V3_FULL)
    assert s.source == str(V3_FULL)
    assert s.name == "ktrdr_v3_full_example"
    assert (s.start_date, s.end_date) == ("2017-05-01", "2018-01-31")
    assert s.indicators["macd_12_26_9"]["type"] == "macd"
    assert s.training["early_stopping"] == {"patience": 15, "min_delta": 0.001}
    ignored = ["scope", "deployment", "model.features", "model.training",
               "model.architecture.output_activation", "decisions.confidence_threshold",
               "decisions.position_awareness", "training.method"]  # fmt: skip
    for key in ignored:
        assert any(w.startswith(f"{key}: ignored") for w in s.warnings), (key, s.warnings)
    assert any(w.startswith("indicators.macd_12_26_9: parameters fast, slow, signal")
               for w in s.warnings)  # fmt: skip
    # The DXY entry is read by no indicator: it is not loaded (no DXY file needed), and said so.
    assert "context_data[0]: no indicator reads DXY (data_source); it is not loaded" \
        in s.warnings
    assert [e.source_ids() for e in s.context_data] == [["DXY"]]
    assert len(s.warnings) == len(ignored) + 2
    for key in ("scope", "deployment", "context_data"):
        assert key in s.raw  # carried along into config.json
    json.dumps(s.raw)
    # --strict (issue 18): every warning is an error, each with its key path.
    with pytest.raises(StrategyError) as info:
        load_strategy(V3_FULL, strict=True)
    assert info.value.errors == [w + "; --strict refuses warnings" for w in s.warnings]


# ------------------------------------------------------------------ files and examples


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads_strictly_without_warnings(path: Path) -> None:
    s = load_strategy(path, strict=True)
    assert s.warnings == []
    assert s.name == path.stem
    assert s.training["seed"] is not None
    assert s.training["epochs"] <= 30


def test_the_four_examples_ship() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"rsi_minimal", "multi_indicator", "multi_symbol", "multi_timeframe"} <= names
    mtf = load_strategy(ROOT / "config/strategies/multi_timeframe.yaml")
    assert (mtf.timeframes, mtf.base_timeframe) == (["1h", "4h"], "1h")
    assert load_strategy(ROOT / "config/strategies/multi_symbol.yaml").symbols == [
        "SP500",
        "NASDAQ",
    ]


def test_base_dir_resolves_names_and_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "strategies"
    root.mkdir()
    (root / "mine.yaml").write_text(json.dumps(base()))
    (tmp_path / "outside.yaml").write_text(json.dumps(base()))
    assert load_strategy("mine.yaml", base_dir=root).name == "rsi_test"
    assert load_strategy("mine", base_dir=root).source == str(root / "mine.yaml")
    for escape in ("../outside.yaml", str(tmp_path / "outside.yaml")):
        with pytest.raises(StrategyError, match="outside the strategies folder"):
            load_strategy(escape, base_dir=root)
    (root / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(StrategyError, match="outside the strategies folder"):
        load_strategy("link.yaml", base_dir=root)


# -- regression and the training keys KTRDR ignores ----------------------------------------


def test_regression_strategy_loads_with_its_defaults() -> None:
    s = load_strategy(regression(base()))
    assert s.decisions == {"output_format": "regression", "cost_model": COST}
    assert s.training["labels"] == {"source": "forward_return", "horizon": 20}
    assert (s.training["output_format"], s.training["loss"], s.training["huber_delta"],
            s.training["weight_decay"]) == ("regression", "huber", 0.01, 0.0)
    assert not any("cost_model" in w for w in s.warnings)  # read for regression


def test_training_keys_ktrdr_ignores_are_read() -> None:
    data = put(base(), "training.lr_scheduler", True)
    put(data, "training.gradient_clip", False)
    put(data, "training.optimizer", "SGD")
    s = load_strategy(data)
    assert s.training["lr_scheduler"] == {"type": "reduce_on_plateau", "factor": 0.5,
                                          "patience": 5}
    assert s.training["gradient_clip"] is None
    assert s.training["optimizer"] == "sgd"
    put(data, "training.lr_scheduler", {"type": "step", "step_size": 50, "gamma": 0.5})
    put(data, "training.gradient_clip", 0)
    s = load_strategy(data)
    assert s.training["lr_scheduler"] == {"type": "step", "step_size": 50, "gamma": 0.5}
    assert s.training["gradient_clip"] is None
    put(data, "training.lr_scheduler", {"type": "exponential"})  # KTRDR's default gamma
    put(data, "training.gradient_clip", 0.5)
    s = load_strategy(data)
    assert s.training["lr_scheduler"] == {"type": "exponential", "gamma": 0.95}
    assert s.training["gradient_clip"] == 0.5
    put(data, "training.lr_scheduler", {"patience": 3})  # KTRDR's default type: step
    with pytest.raises(StrategyError) as caught:
        load_strategy(put(data, "training.lr_scheduler.step_size", 0))
    assert caught.value.errors == ["training.lr_scheduler.step_size: 0 is not allowed; "
                                   "a whole number >= 1"]
    s = load_strategy(put(data, "training.lr_scheduler", {"patience": 3}))
    assert s.training["lr_scheduler"] == {"type": "step", "step_size": 30, "gamma": 0.1}
    assert "training.lr_scheduler.patience: ignored (not used by this trainer)" in s.warnings


def test_a_bad_regression_file_gets_every_error_at_once() -> None:
    data = regression(base())
    put(data, "decisions.cost_model", None)
    put(data, "training.loss", "focal")
    put(data, "training.lr_scheduler", {"type": "plateau"})
    with pytest.raises(StrategyError) as caught:
        load_strategy(data)
    paths = [e.split(":")[0] for e in caught.value.errors]
    assert paths == ["decisions.cost_model", "training.loss", "training.lr_scheduler.type"]
