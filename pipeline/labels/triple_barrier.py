"""Triple-barrier labels: which of take-profit, stop-loss or the time limit a trade hits first.

KTRDR's algorithm (``TripleBarrierLabeler``, grammar doc section 3.3), vectorized: instead of
walking each bar's H future bars in Python, one numpy pass per holding offset d = 1..H tests
every still-open bar at once, so the work shrinks as trades resolve (about H array passes over
the open bars, not N * H Python steps). Outcome +1 take-profit -> class 0 BUY, 0 expiry -> 1
HOLD, -1 stop-loss -> 2 SELL. The last H bars have no label (no full holding window).

Options: a CUSUM event filter (``cusum_threshold``; features and labels are filtered together
by the caller through ``LabelResult.valid``) and uniqueness ``compute_weights`` for a weighted
sampler. The dataset step splits with :func:`pipeline.labels.purged.purged_split`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.labels.base import LabelResult, LabelSource, Param
from pipeline.labels.cusum import cusum_events
from pipeline.labels.sample_weights import uniqueness_weights
from pipeline.labels.zigzag import LABEL_NAMES

TAKE_PROFIT, EXPIRY, STOP_LOSS = 1, 0, -1
_COLUMNS = ("open", "high", "low", "close")


def barrier_volatility(close: np.ndarray, high: np.ndarray, low: np.ndarray,
                       span: int, method: str) -> np.ndarray:
    """Per-bar volatility as a fraction of price, KTRDR's way.

    "atr": EWM mean (span, adjust=True) of the bar's own range (H - L) / C, no previous close.
    Anything else: EWM std (bias-corrected) of close-to-close log returns, NaN at bar 0.
    The first min(span, N - 1) values, where NaN or exactly 0, take the value at that index.
    """
    if method == "atr":
        vol = pd.Series((high - low) / close).ewm(span=span).mean().to_numpy(np.float64, copy=True)
    else:
        vol = np.empty(len(close), dtype=np.float64)
        vol[0] = np.nan
        returns = np.diff(np.log(close.astype(np.float64)))
        vol[1:] = pd.Series(returns).ewm(span=span).std().to_numpy(np.float64)
    k = min(span, len(vol) - 1)
    if k > 0:
        head = vol[:k]
        head[np.isnan(head) | (head == 0)] = vol[k]
    return vol


def barrier_outcomes(close: np.ndarray, high: np.ndarray, low: np.ndarray, vol: np.ndarray,
                     pt: float, sl: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcome (+1/0/-1) and holding bars for bars 0..N-H-1.

    Barriers are entry * (1 + pt * vol) and entry * (1 - sl * vol); a bar whose high and low
    reach both is decided by its close against the entry. No hit within H bars: the return to
    bar t + H decides, 0 when its size is under 0.5 * vol * sqrt(H).
    """
    m = len(close) - horizon
    entry, v = close[:m], vol[:m]
    upper = entry * (1 + pt * v)
    lower = entry * (1 - sl * v)
    outcome = np.zeros(m, dtype=np.int64)
    hold = np.full(m, horizon, dtype=np.int64)
    open_ = np.arange(m)
    for d in range(1, horizon + 1):
        if open_.size == 0:
            break
        ahead = open_ + d
        hit_up = high[ahead] >= upper[open_]
        hit_down = low[ahead] <= lower[open_]
        hit = hit_up | hit_down
        if not hit.any():
            continue
        up_wins = np.where(hit_up & hit_down, close[ahead] >= entry[open_], hit_up)
        done = open_[hit]
        outcome[done] = np.where(up_wins[hit], TAKE_PROFIT, STOP_LOSS)
        hold[done] = d
        open_ = open_[~hit]
    ret = (close[open_ + horizon] - entry[open_]) / entry[open_]
    band = v[open_] * np.sqrt(horizon) * 0.5
    outcome[open_] = np.where(np.abs(ret) < band, EXPIRY, np.sign(ret)).astype(np.int64)
    return outcome, hold


def triple_barrier_labels(bars: pd.DataFrame, params: Mapping[str, Any]) -> LabelResult:
    """Classes 0 BUY / 1 HOLD / 2 SELL for every bar with a full holding window after it."""
    missing = [c for c in _COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"triple_barrier labels need columns {', '.join(_COLUMNS)}; "
                        f"missing {', '.join(missing)}")
    horizon, span = params["max_holding_period"], params["vol_span"]
    n = len(bars)
    if n < horizon + span:
        raise DataError(
            f"triple_barrier labels need at least max_holding_period + vol_span = "
            f"{horizon + span} bars, got {n}; use more data or shorter settings")
    close = bars["close"].to_numpy(np.float64)
    high, low = bars["high"].to_numpy(np.float64), bars["low"].to_numpy(np.float64)
    vol = barrier_volatility(close, high, low, span, params["vol_method"])
    outcome, hold = barrier_outcomes(close, high, low, vol, params["pt_multiplier"],
                                     params["sl_multiplier"], horizon)
    m = len(outcome)
    values = np.full(n, -1, dtype=np.int64)
    values[:m] = 1 - outcome  # +1 -> 0 BUY, 0 -> 1 HOLD, -1 -> 2 SELL
    valid = np.zeros(n, dtype=bool)
    valid[:m] = True
    info: dict[str, Any] = {"take_profit": int((outcome == TAKE_PROFIT).sum()),
                            "stop_loss": int((outcome == STOP_LOSS).sum()),
                            "expiry": int((outcome == EXPIRY).sum())}
    if params["cusum_threshold"] is not None:
        events = cusum_events(close, params["cusum_threshold"], params["cusum_multiplier"], span)
        info["cusum_events"] = int(events.sum())
        valid &= events
    holds = np.zeros(n, dtype=np.int64)
    holds[:m] = hold
    weights = None
    if params["compute_weights"]:
        weights = np.full(n, np.nan)
        rows = np.flatnonzero(valid)
        weights[rows] = uniqueness_weights(rows, holds[rows])
    return LabelResult(values=values, valid=valid, weights=weights, hold=holds, info=info)


def _describe(p: Mapping[str, Any]) -> str:
    text = (f"triple barrier (take profit {p['pt_multiplier']:g} x vol, stop loss "
            f"{p['sl_multiplier']:g} x vol, at most {p['max_holding_period']} bars, "
            f"{p['vol_method']} vol span {p['vol_span']}")
    if p["cusum_threshold"] is not None:
        text += ", CUSUM filter"
    if p["compute_weights"]:
        text += ", uniqueness weights"
    return text + ")"


SOURCE = LabelSource(
    name="triple_barrier",
    params=(
        Param("pt_multiplier", 2.0, "float", "> 0", lambda x: x > 0),
        Param("sl_multiplier", 1.5, "float", "> 0", lambda x: x > 0),
        Param("max_holding_period", 50, "int", ">= 1", lambda x: x >= 1),
        Param("vol_span", 50, "int", ">= 1", lambda x: x >= 1),
        Param("vol_method", "atr", "choice", choices=("atr", "close")),
        Param("compute_weights", False, "bool"),
        Param("cusum_threshold", None, "number?",
              "(a log-return threshold; 0 or less: cusum_multiplier x mean volatility)"),
        Param("cusum_multiplier", 0.5, "float", "> 0", lambda x: x > 0),
    ),
    aliases={"profit_target_atr": "pt_multiplier", "stop_loss_atr": "sl_multiplier",
             "max_holding_bars": "max_holding_period", "atr_period": "vol_span"},
    label=triple_barrier_labels,
    classes=LABEL_NAMES,
    output_type="classification",
    describe=_describe,
    split="purged",
    purge_bars=lambda p: int(p["max_holding_period"]),
)
