"""Step 2-4: indicators and fuzzy memberships per timeframe, then the network's feature table.

Every timeframe is computed at its own resolution and then aligned to the base timeframe by
forward-filling the last bar that had *closed* when the base bar closed (see
``market_data.align_to_base``), so no row ever sees a price from its future.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.context_data import ContextSeries, load_context
from pipeline.errors import FeatureError
from pipeline.fuzzy import compute_fuzzy
from pipeline.indicators import compute_indicators
from pipeline.market_data import align_available, align_to_base
from pipeline.strategy import Strategy


@dataclass
class TimeframeFrames:
    """What one symbol's bars give at one timeframe, on that timeframe's own index."""

    bars: pd.DataFrame
    indicators: pd.DataFrame = field(default_factory=pd.DataFrame)
    fuzzy: pd.DataFrame = field(default_factory=pd.DataFrame)


def resolved_features(strategy: Strategy) -> list[str]:
    """The canonical, ordered feature ids the network reads (stored as ``resolved_features``).

    Order: nn_inputs in list order, then their timeframes in order, then memberships in YAML order.
    """
    names: list[str] = []
    for spec in strategy.nn_inputs:
        for tf in spec["timeframes"]:
            if "fuzzy_set" in spec:
                set_id = spec["fuzzy_set"]
                for member in strategy.fuzzy_sets[set_id]["memberships"]:
                    names.append(f"{tf}_{set_id}_{member['name']}")
            else:
                names.append(f"{tf}_{spec['raw_indicator']}_raw")
    return names


@dataclass
class ContextValues:
    """Indicators computed on one context series at its own frequency, and when each row could
    first be known (see ``context_data``)."""

    values: pd.DataFrame
    available: pd.DatetimeIndex


def load_context_series(strategy: Strategy, data_root: Path) -> dict[str, ContextSeries]:
    """The context series the strategy's indicators read, from files under ``data_root``.

    An entry no indicator reads is not loaded (the loader warned), so its file is not needed.
    """
    wanted = {s["data_source"] for s in strategy.indicators.values() if "data_source" in s}
    return load_context(strategy.context_data, data_root, wanted)


def compute_context_indicators(
    strategy: Strategy, series: Mapping[str, ContextSeries]
) -> dict[str, ContextValues]:
    """Every indicator with a ``data_source``, on its series' own rows (daily, weekly, hourly).

    Computing before aligning is what makes a 14-period RSI of a daily rate span 14 days, not
    14 base bars of a forward-filled copy (KTRDR's way). Once per run, shared by every symbol.
    """
    out: dict[str, ContextValues] = {}
    for source_id, context in series.items():
        specs = {i: s for i, s in strategy.indicators.items() if s.get("data_source") == source_id}
        if not specs:
            continue
        try:
            values = compute_indicators(context.frame, specs)
        except (KeyError, ValueError) as exc:  # a price column the series lacks
            raise FeatureError(
                f"indicators {', '.join(specs)} on data_source {source_id} ({context.origin}): "
                f"{exc}; that series has only {', '.join(context.frame.columns)}, so use an "
                "indicator of close alone (rsi, ema, sma, roc, ...)"
            ) from exc
        out[source_id] = ContextValues(values, context.available)
    return out


def compute_indicator_frames(
    strategy: Strategy,
    bars_by_timeframe: Mapping[str, pd.DataFrame],
    context: Mapping[str, ContextValues] | None = None,
) -> dict[str, TimeframeFrames]:
    """Step 2: every indicator of the strategy on every timeframe's bars.

    An indicator with a ``data_source`` takes its values from ``context`` (computed once by
    :func:`compute_context_indicators`), each bar seeing the last value known by its close.
    """
    price = {i: s for i, s in strategy.indicators.items() if "data_source" not in s}
    wanted = {s["data_source"] for s in strategy.indicators.values() if "data_source" in s}
    missing = wanted - set(context or {})
    if missing:
        raise FeatureError(f"context series {', '.join(sorted(missing))} were not loaded; "
                           "load them with context_data.load_context first")
    frames = {}
    for tf, bars in bars_by_timeframe.items():
        parts = [compute_indicators(bars, price)] if price else []
        for values in (context or {}).values():
            parts.append(align_available(bars.index, tf, values.values, values.available))
        table = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=bars.index)
        frames[tf] = TimeframeFrames(bars=bars, indicators=table[_column_order(strategy, table)])
    return frames


def _column_order(strategy: Strategy, table: pd.DataFrame) -> list[str]:
    """Indicator columns in the strategy's order, whatever series each came from."""
    ids = list(strategy.indicators)
    return sorted(table.columns, key=lambda c: ids.index(c.partition(".")[0]))


def add_fuzzy(strategy: Strategy, frames: dict[str, TimeframeFrames]) -> None:
    """Step 3: fuzzy memberships, computed from each timeframe's own indicator values."""
    for tf_frames in frames.values():
        tf_frames.fuzzy = compute_fuzzy(tf_frames.indicators, strategy.fuzzy_sets)


def aligned_columns(
    strategy: Strategy, frames: Mapping[str, TimeframeFrames]
) -> tuple[pd.DatetimeIndex, dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Indicator and fuzzy frames of every timeframe, aligned onto the base timeframe's index."""
    base_tf = strategy.base_timeframe
    base_index = frames[base_tf].bars.index
    indicators: dict[str, pd.DataFrame] = {}
    fuzzy: dict[str, pd.DataFrame] = {}
    for tf, tf_frames in frames.items():
        if tf == base_tf:
            indicators[tf], fuzzy[tf] = tf_frames.indicators, tf_frames.fuzzy
        else:
            indicators[tf] = align_to_base(base_index, base_tf, tf_frames.indicators, tf)
            fuzzy[tf] = align_to_base(base_index, base_tf, tf_frames.fuzzy, tf)
    return base_index, indicators, fuzzy


def feature_table(strategy: Strategy, frames: Mapping[str, TimeframeFrames]) -> pd.DataFrame:
    """Step 4: the network inputs on the base index, warm-up rows still in (NaN)."""
    base_index, indicators, fuzzy = aligned_columns(strategy, frames)
    columns: dict[str, np.ndarray] = {}
    for spec in strategy.nn_inputs:
        for tf in spec["timeframes"]:
            if "fuzzy_set" in spec:
                set_id = spec["fuzzy_set"]
                for member in strategy.fuzzy_sets[set_id]["memberships"]:
                    source = f"{set_id}_{member['name']}"
                    columns[f"{tf}_{source}"] = fuzzy[tf][source].to_numpy(np.float64)
            else:
                ref = spec["raw_indicator"]
                columns[f"{tf}_{ref}_raw"] = indicators[tf][ref].to_numpy(np.float64)
    table = pd.DataFrame(columns, index=base_index)
    return table[resolved_features(strategy)]


def _first(valid: np.ndarray) -> int:
    hits = np.flatnonzero(valid)
    return int(hits[0]) if hits.size else len(valid)


def drop_warmup(table: pd.DataFrame, symbol: str) -> tuple[pd.DataFrame, int]:
    """Drop the warm-up prefix (rows before every feature is valid); any NaN after it is an error.

    Returns the trimmed table and how many rows were dropped.
    """
    valid = ~table.isna().any(axis=1).to_numpy()
    start = _first(valid)
    if start >= len(table):
        worst = table.isna().sum().idxmax() if len(table.columns) else "?"
        raise FeatureError(
            f"{symbol}: no row has every feature defined (feature {worst!r} is never valid); "
            "use more data or shorter indicator periods"
        )
    trimmed = table.iloc[start:]
    holes = trimmed.isna()
    if holes.to_numpy().any():
        column = holes.any(axis=0).idxmax()
        row = holes[column].to_numpy().argmax()
        raise FeatureError(
            f"{symbol}: feature {column!r} is NaN at {trimmed.index[row]} after the warm-up; "
            "check the price data for gaps or zero ranges"
        )
    return trimmed, start


def export_table(
    strategy: Strategy, frames: Mapping[str, TimeframeFrames], labels: np.ndarray
) -> pd.DataFrame:
    """What ``ktrdr-daemon features`` writes (spool spec section 8), warm-up rows included.

    Columns: ``timestamp``, every indicator column of every timeframe as ``{tf}_{column}``,
    then every fuzzy column as ``{tf}_{set}_{membership}``, then ``label``.
    """
    base_index, indicators, fuzzy = aligned_columns(strategy, frames)
    parts: dict[str, np.ndarray] = {
        "timestamp": base_index.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    }
    for source in (indicators, fuzzy):
        for tf in strategy.timeframes:
            for column in source[tf].columns:
                parts[f"{tf}_{column}"] = source[tf][column].to_numpy(np.float64)
    parts["label"] = labels
    return pd.DataFrame(parts)
