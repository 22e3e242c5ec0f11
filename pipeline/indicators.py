"""Technical indicators: a registry of KTRDR's indicator types and their formulas (spec section 3).

A strategy names indicators by ``type`` plus parameters; this module maps that name to one
vectorized formula. Defaults and formulas follow KTRDR so a model trained here sees the same
features as one trained there. Every formula works on whole numpy/pandas columns; the only
recursions (Wilder and exponential smoothing) go through pandas' compiled ``ewm``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class ParamSpec:
    """One indicator parameter: its default and its type (an int is accepted for a float)."""

    default: Any
    kind: type


@dataclass(frozen=True)
class IndicatorSpec:
    """What the strategy loader and the feature step need to know about one indicator type.

    ``outputs`` is empty for single-output indicators; otherwise its first entry is the output
    that the bare ``{indicator_id}`` column repeats.
    """

    name: str
    aliases: tuple[str, ...]
    params: Mapping[str, ParamSpec]
    outputs: tuple[str, ...]
    compute: Callable[..., pd.DataFrame] = field(repr=False)


# --------------------------------------------------------------------------------------------
# Small helpers shared by the formulas
# --------------------------------------------------------------------------------------------


def _column(bars: pd.DataFrame, name: str) -> np.ndarray:
    """A price column as float64 numpy; ``source`` is user input, so name the allowed values."""
    if name not in bars.columns:
        allowed = ", ".join(PRICE_COLUMNS)
        raise ValueError(f"source {name!r} is not a price column; allowed: {allowed}")
    return bars[name].to_numpy(dtype=np.float64)


Outputs = dict[str, np.ndarray]


def _owned(series: pd.Series) -> np.ndarray:
    """The values of a temporary Series made here, as a writable array without a copy.

    pandas hands out read-only views to protect the Series; ours is dropped at once, so the
    array is ours. A frame built on read-only arrays would refuse ``df.loc[...] = v`` later,
    and copying every output instead costs more than most formulas at a million bars.
    """
    values = series.to_numpy(dtype=np.float64)
    if not values.flags.writeable:
        try:
            values.flags.writeable = True
        except ValueError:  # a numpy that refuses: pay for the copy
            values = values.copy()
    return values


def _out(**columns: np.ndarray) -> Outputs:
    """A formula's named output arrays ("value" for a single output)."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}


def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    return _owned(pd.Series(x).rolling(n).mean())


def _ewm(x: np.ndarray, *, alpha: float | None = None, span: float | None = None,
         adjust: bool = False) -> np.ndarray:
    """Exponential smoothing via pandas' compiled loop (the recursion never runs in Python)."""
    return _owned(pd.Series(x).ewm(alpha=alpha, span=span, adjust=adjust).mean())


def _shift(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` delayed by ``n`` bars, NaN-padded (numpy, so no index alignment cost)."""
    out = np.full_like(x, np.nan)
    if 0 < n < len(x):
        out[n:] = x[:-n]
    elif n == 0:
        out[:] = x
    return out


def _true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Wilder's true range; the first bar has no previous close, so it is just high - low."""
    prev = _shift(close, 1)
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    tr[:1] = high[:1] - low[:1]
    return tr


def _wilder_seeded(x: np.ndarray, n: int) -> np.ndarray:
    """``avg = (avg*(n-1) + x)/n`` seeded at index ``n`` with the plain mean of ``x[1..n]``.

    This is an ewm with alpha 1/n whose first input is the seed, so pandas runs the recursion.
    Returns NaN before index ``n``.
    """
    out = np.full_like(x, np.nan)
    if len(x) <= n:
        return out
    seeded = x[n:].copy()
    seeded[0] = x[1 : n + 1].mean()
    out[n:] = _ewm(seeded, alpha=1.0 / n)
    return out


# --------------------------------------------------------------------------------------------
# Formulas (spec section 3); each returns a frame on bars.index
# --------------------------------------------------------------------------------------------


def _sma(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    return _out(value=_rolling_mean(_column(bars, source), period))


def _ema(bars: pd.DataFrame, period: int, source: str, adjust: bool) -> Outputs:
    """KTRDR's EMA: no warm-up NaN, and ``adjust=True`` by default (pandas' weighting)."""
    return _out(value=_ewm(_column(bars, source), span=period, adjust=adjust))


def _rsi(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    """Wilder RSI, first value at index ``period`` (as TA-Lib)."""
    change = np.diff(_column(bars, source), prepend=np.nan)
    avg_gain = _wilder_seeded(np.maximum(change, 0.0), period)
    avg_loss = _wilder_seeded(np.maximum(-change, 0.0), period)
    # 100 - 100/(1 + gain/loss) written as 100 gain/(gain + loss): no division by a zero loss
    # (which gives exactly 100), one pass fewer, and TA-Lib's own rounding.
    total = avg_gain + avg_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 * avg_gain / total
    rsi[total == 0] = 50.0  # price did not move at all: neutral
    return _out(value=rsi)


def _macd(bars: pd.DataFrame, fast_period: int, slow_period: int, signal_period: int,
          source: str) -> Outputs:
    price = _column(bars, source)
    line = _ewm(price, span=fast_period) - _ewm(price, span=slow_period)
    signal = _ewm(line, span=signal_period)
    return _out(line=line, signal=signal, histogram=line - signal)


def _bollinger(bars: pd.DataFrame, period: int, multiplier: float, source: str) -> Outputs:
    """Bands use the sample std (ddof=1) like KTRDR; TA-Lib's uses ddof=0, by design different."""
    rolling = pd.Series(_column(bars, source)).rolling(period)
    middle = _owned(rolling.mean())
    band = multiplier * _owned(rolling.std(ddof=1))
    return _out(upper=middle + band, middle=middle, lower=middle - band)


def _atr(bars: pd.DataFrame, period: int) -> Outputs:
    """KTRDR's ATR is a simple mean of the true range, not Wilder's smoothing."""
    tr = _true_range(_column(bars, "high"), _column(bars, "low"), _column(bars, "close"))
    return _out(value=_rolling_mean(tr, period))


def _highest_lowest(bars: pd.DataFrame, period: int) -> tuple[np.ndarray, np.ndarray]:
    high = _owned(pd.Series(_column(bars, "high")).rolling(period).max())
    low = _owned(pd.Series(_column(bars, "low")).rolling(period).min())
    return high, low


def _stochastic(bars: pd.DataFrame, k_period: int, d_period: int, smooth_k: int) -> Outputs:
    """Slow stochastic; warm-up and zero-range bars read as the neutral 50, as in KTRDR."""
    hh, ll = _highest_lowest(bars, k_period)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = 100.0 * (_column(bars, "close") - ll) / (hh - ll)
    raw = np.where(np.isfinite(raw), raw, 50.0)
    k = pd.Series(raw).rolling(smooth_k, min_periods=1).mean()
    d = k.rolling(d_period, min_periods=1).mean()
    return _out(k=_owned(k), d=_owned(d))


def _williamsr(bars: pd.DataFrame, period: int) -> Outputs:
    hh, ll = _highest_lowest(bars, period)
    with np.errstate(divide="ignore", invalid="ignore"):
        wr = -100.0 * (hh - _column(bars, "close")) / (hh - ll)
    return _out(value=np.where(np.isfinite(wr), wr, -50.0))


def _mean_abs_deviation(x: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Mean |x_j - mean_i| over each window ending at i; chunked to bound memory at n per bar."""
    out = np.full_like(x, np.nan)
    if len(x) < n:
        return out
    windows = sliding_window_view(x, n)
    chunk = max(1, 4_000_000 // n)
    for start in range(0, len(windows), chunk):
        block = windows[start : start + chunk]
        centre = mean[n - 1 + start : n - 1 + start + len(block), None]
        out[n - 1 + start : n - 1 + start + len(block)] = np.abs(block - centre).mean(axis=1)
    return out


def _cci(bars: pd.DataFrame, period: int) -> Outputs:
    """CCI; a flat window (zero deviation) gives 0, as TA-Lib, instead of 0/0."""
    tp = (_column(bars, "high") + _column(bars, "low") + _column(bars, "close")) / 3.0
    sma = _rolling_mean(tp, period)
    mad = _mean_abs_deviation(tp, sma, period)
    with np.errstate(divide="ignore", invalid="ignore"):
        cci = (tp - sma) / (0.015 * mad)
    return _out(value=np.where(mad == 0, 0.0, cci))


def _roc(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    price = _column(bars, source)
    before = _shift(price, period)
    with np.errstate(divide="ignore", invalid="ignore"):
        roc = 100.0 * (price - before) / before
    return _out(value=np.where(np.isinf(roc), np.nan, roc))


def _momentum(bars: pd.DataFrame, period: int, source: str) -> Outputs:
    price = _column(bars, source)
    return _out(value=price - _shift(price, period))


def _adx(bars: pd.DataFrame, period: int) -> Outputs:
    """ADX with Wilder smoothing as ``ewm(alpha=1/period, adjust=False)`` from bar 0 (KTRDR).

    TA-Lib seeds its Wilder sums differently; the two converge geometrically (see tests).
    """
    high, low, close = _column(bars, "high"), _column(bars, "low"), _column(bars, "close")
    up = np.diff(high, prepend=np.nan)
    down = -np.diff(low, prepend=np.nan)
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    alpha = 1.0 / period
    tr = _ewm(_true_range(high, low, close), alpha=alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        plus_di = np.where(tr == 0, 0.0, 100.0 * _ewm(plus_dm, alpha=alpha) / tr)
        minus_di = np.where(tr == 0, 0.0, 100.0 * _ewm(minus_dm, alpha=alpha) / tr)
        di_sum = plus_di + minus_di
        dx = np.where(di_sum == 0, 0.0, 100.0 * np.abs(plus_di - minus_di) / di_sum)
    return _out(adx=_ewm(dx, alpha=alpha), plus_di=plus_di, minus_di=minus_di)


def _obv(bars: pd.DataFrame) -> Outputs:
    """On-balance volume starting at 0 (TA-Lib starts at the first volume: same differences)."""
    step = np.sign(np.diff(_column(bars, "close"), prepend=np.nan)) * _column(bars, "volume")
    step[:1] = 0.0
    return _out(value=np.cumsum(step))


def _mfi(bars: pd.DataFrame, period: int) -> Outputs:
    """Money flow index; first value at index ``period`` (every bar in the window has a previous).

    The zero tests count flows instead of reading the rolling sums, which can leave a tiny
    residue where the exact answer is 0. A typical price that differs from the previous one
    only by rounding (1 ulp) counts as a move, as in KTRDR's ``diff() > 0``; TA-Lib's build
    sees no move there, so the two differ on such windows (about 0.8 % of EURUSD bars).
    """
    tp = (_column(bars, "high") + _column(bars, "low") + _column(bars, "close")) / 3.0
    flow = tp * _column(bars, "volume")
    move = np.diff(tp, prepend=np.nan)
    rising, falling = move > 0, move < 0
    first = np.isnan(move)

    def window_sum(x: np.ndarray) -> np.ndarray:
        x = np.where(first, np.nan, x)
        return _owned(pd.Series(x).rolling(period).sum())

    pos = window_sum(np.where(rising, flow, 0.0))
    neg = window_sum(np.where(falling, flow, 0.0))
    pos_count = window_sum(rising.astype(np.float64))
    neg_count = window_sum(falling.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        mfi = 100.0 - 100.0 / (1.0 + pos / neg)
    mfi = np.where(neg_count == 0, 100.0, np.where(pos_count == 0, 0.0, mfi))
    return _out(value=np.where(np.isnan(pos), np.nan, mfi))


def _donchian(bars: pd.DataFrame, period: int) -> Outputs:
    upper, lower = _highest_lowest(bars, period)
    return _out(upper=upper, middle=(upper + lower) / 2.0, lower=lower)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _p(default: Any, kind: type) -> ParamSpec:
    return ParamSpec(default, kind)


_SOURCE = {"source": _p("close", str)}

_FORMULAS: dict[str, Callable[..., Outputs]] = {}


def _spec(name: str, aliases: tuple[str, ...], params: Mapping[str, ParamSpec],
          outputs: tuple[str, ...], formula: Callable[..., Outputs]) -> IndicatorSpec:
    """Register ``formula``; the public ``compute`` wraps its arrays in a frame on bars.index."""
    _FORMULAS[name] = formula

    def compute(bars: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
        # The arrays are new and owned by nobody else, so the frame may take them uncopied.
        return pd.DataFrame(formula(bars, **kwargs), index=bars.index, copy=False)

    compute.__doc__ = formula.__doc__
    return IndicatorSpec(name, aliases, params, outputs, compute)


_SPECS: tuple[IndicatorSpec, ...] = (
    _spec("sma", ("simplemovingaverage",), {"period": _p(20, int), **_SOURCE}, (), _sma),
    _spec("ema", ("exponentialmovingaverage",),
          {"period": _p(20, int), **_SOURCE, "adjust": _p(True, bool)}, (), _ema),
    _spec("rsi", ("relativestrengthindex",), {"period": _p(14, int), **_SOURCE}, (), _rsi),
    _spec("macd", (), {"fast_period": _p(12, int), "slow_period": _p(26, int),
                       "signal_period": _p(9, int), **_SOURCE},
          ("line", "signal", "histogram"), _macd),
    _spec("bollingerbands", ("bbands",),
          {"period": _p(20, int), "multiplier": _p(2.0, float), **_SOURCE},
          ("upper", "middle", "lower"), _bollinger),
    _spec("atr", ("averagetruerange",), {"period": _p(14, int)}, (), _atr),
    _spec("stochastic", ("stoch",),
          {"k_period": _p(14, int), "d_period": _p(3, int), "smooth_k": _p(3, int)},
          ("k", "d"), _stochastic),
    _spec("williamsr", ("willr",), {"period": _p(14, int)}, (), _williamsr),
    _spec("cci", ("commoditychannelindex",), {"period": _p(20, int)}, (), _cci),
    _spec("roc", ("rateofchange",), {"period": _p(10, int), **_SOURCE}, (), _roc),
    _spec("momentum", ("mom",), {"period": _p(10, int), **_SOURCE}, (), _momentum),
    _spec("adx", ("averagedirectionalindex",), {"period": _p(14, int)},
          ("adx", "plus_di", "minus_di"), _adx),
    _spec("obv", ("onbalancevolume",), {}, (), _obv),
    _spec("mfi", ("moneyflowindex",), {"period": _p(14, int)}, (), _mfi),
    _spec("donchianchannels", ("donchian",), {"period": _p(20, int)},
          ("upper", "middle", "lower"), _donchian),
)


def _normalise(type_name: str) -> str:
    """KTRDR spells types many ways ("BollingerBands", "bollinger_bands"); compare one form."""
    return type_name.strip().lower().replace("_", "")


_LOOKUP: dict[str, IndicatorSpec] = {
    _normalise(key): spec for spec in _SPECS for key in (spec.name, *spec.aliases)
}


def indicator_spec(type_name: str) -> IndicatorSpec | None:
    """The spec for a strategy's ``type`` (case, ``_`` and aliases ignored), or None if unknown."""
    if not isinstance(type_name, str):
        return None
    return _LOOKUP.get(_normalise(type_name))


def indicator_names() -> list[str]:
    """Canonical names, sorted, for "allowed: ..." error messages."""
    return sorted(spec.name for spec in _SPECS)


def _resolve_params(spec: IndicatorSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults for missing params; unknown ones are dropped (strategy validation warns)."""
    resolved: dict[str, Any] = {}
    for key, pspec in spec.params.items():
        value = params.get(key, pspec.default)
        resolved[key] = value if pspec.kind is str or pspec.kind is bool else pspec.kind(value)
    return resolved


def compute_indicator(
    bars: pd.DataFrame, type_name: str, params: Mapping[str, Any]
) -> pd.DataFrame:
    """One indicator on ``bars``: a frame with one column per output ("value" if single)."""
    spec = indicator_spec(type_name)
    if spec is None:
        raise ValueError(
            f"unknown indicator type {type_name!r}; allowed: {', '.join(indicator_names())}"
        )
    return spec.compute(bars, **_resolve_params(spec, params))


def compute_indicators(bars: pd.DataFrame,
                       indicators: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """All of a strategy's indicators as one frame, columns named as fuzzy sets refer to them.

    Single output: ``{id}``. Multi output: ``{id}`` (the first output) then ``{id}.{output}``.
    """
    columns: dict[str, np.ndarray] = {}
    for indicator_id, config in indicators.items():
        spec = indicator_spec(config.get("type", ""))
        if spec is None:
            raise ValueError(f"indicators.{indicator_id}.type: {config.get('type')!r} is unknown; "
                             f"allowed: {', '.join(indicator_names())}")
        result = _FORMULAS[spec.name](bars, **_resolve_params(spec, config))
        if not spec.outputs:
            columns[indicator_id] = result["value"]
            continue
        # A copy, so no two columns share memory behind pandas' back.
        columns[indicator_id] = result[spec.outputs[0]].copy()
        for output in spec.outputs:
            columns[f"{indicator_id}.{output}"] = result[output]
    # Every array is new and writable; copying them into one block would cost more than the
    # formulas themselves at a million bars.
    return pd.DataFrame(columns, index=bars.index, dtype=np.float64, copy=False)
