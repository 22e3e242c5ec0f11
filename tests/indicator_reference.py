"""Plain reference implementations of KTRDR's 31 indicator formulas, for the tests only.

Written from the formulas in ``ktrdr-v3-grammar.md`` section 1.4 (and ``ktrdr-v3-study.md``
section 2) as straightforward loops over Python lists, one bar at a time, sharing no code with
``pipeline.indicators``. They compute what KTRDR computes, warm-up fillers included (the 50 of
the stochastic, the 0.0 of Bollinger band width...); the tests decide which bars must agree.
"""

from __future__ import annotations

import math

NAN = math.nan
Series = list[float]


def nans(n: int) -> Series:
    return [NAN] * n


def sma(x: Series, n: int, min_periods: int | None = None) -> Series:
    """Mean of the last ``n`` values (fewer, down to ``min_periods``, at the start)."""
    need = n if min_periods is None else min_periods
    result = nans(len(x))
    for i in range(len(x)):
        window = x[max(0, i - n + 1) : i + 1]
        if len(window) >= need and not any(math.isnan(v) for v in window):
            result[i] = sum(window) / len(window)
    return result


def rolling_sum(x: Series, n: int, min_periods: int | None = None) -> Series:
    need = n if min_periods is None else min_periods
    return [sum(x[i - n + 1 if i >= n - 1 else 0 : i + 1]) if i + 1 >= need else NAN
            for i in range(len(x))]


def sample_std(x: Series, n: int) -> Series:
    result = nans(len(x))
    for i in range(n - 1, len(x)):
        window = x[i - n + 1 : i + 1]
        mean = sum(window) / n
        result[i] = math.sqrt(sum((v - mean) ** 2 for v in window) / (n - 1))
    return result


def highest(x: Series, n: int) -> Series:
    return [max(x[i - n + 1 : i + 1]) if i >= n - 1 else NAN for i in range(len(x))]


def lowest(x: Series, n: int) -> Series:
    return [min(x[i - n + 1 : i + 1]) if i >= n - 1 else NAN for i in range(len(x))]


def ewm_recursive(x: Series, alpha: float) -> Series:
    """EWMf: y = first non-NaN x, then y = (1 - alpha) y + alpha x."""
    result, y = nans(len(x)), NAN
    for i, v in enumerate(x):
        if math.isnan(y):
            y = v
        elif not math.isnan(v):
            y = (1 - alpha) * y + alpha * v
        result[i] = y
    return result


def ewm_weighted(x: Series, alpha: float) -> Series:
    """EWMt: sum of (1 - alpha)^i x[t - i] over sum of (1 - alpha)^i, i = 0..t."""
    result, num, den = [], 0.0, 0.0
    for v in x:
        num = num * (1 - alpha) + v
        den = den * (1 - alpha) + 1
        result.append(num / den)
    return result


def span(n: float) -> float:
    return 2 / (n + 1)


def shifted(x: Series, k: int) -> Series:
    return nans(k) + x[: len(x) - k] if k else list(x)


def true_range(h: Series, low: Series, c: Series) -> Series:
    return [h[0] - low[0]] + [max(h[i] - low[i], abs(h[i] - c[i - 1]), abs(low[i] - c[i - 1]))
                              for i in range(1, len(c))]


def sub(a: Series, b: Series) -> Series:
    return [p - q for p, q in zip(a, b, strict=True)]


def money_flow_multiplier(h: Series, low: Series, c: Series) -> Series:
    return [((c[i] - low[i]) - (h[i] - c[i])) / (h[i] - low[i]) if h[i] != low[i] else 0.0
            for i in range(len(c))]


# --- the 31 indicators: each takes bars as lists (o, h, l, c, v) and returns its outputs ------

Bars = dict[str, Series]


def ref_rsi(b: Bars, period: int = 14) -> dict[str, Series]:
    x, n = b["c"], period
    gains = [0.0] + [max(x[i] - x[i - 1], 0.0) for i in range(1, len(x))]
    losses = [0.0] + [max(x[i - 1] - x[i], 0.0) for i in range(1, len(x))]
    result = nans(len(x))
    g, loss = sum(gains[1 : n + 1]) / n, sum(losses[1 : n + 1]) / n
    for i in range(n, len(x)):
        if i > n:
            g, loss = (g * (n - 1) + gains[i]) / n, (loss * (n - 1) + losses[i]) / n
        result[i] = (50.0 if g == 0 else 100.0) if loss == 0 else 100 - 100 / (1 + g / loss)
    return {"value": result}


def ref_sma(b: Bars, period: int = 20) -> dict[str, Series]:
    return {"value": sma(b["c"], period)}


def ref_ema(b: Bars, period: int = 20, adjust: bool = True) -> dict[str, Series]:
    smooth = ewm_weighted if adjust else ewm_recursive
    return {"value": smooth(b["c"], span(period))}


def ref_wma(b: Bars, period: int = 20) -> dict[str, Series]:
    x, w = b["c"], list(range(1, period + 1))
    return {"value": [sum(wi * xi for wi, xi in zip(w, x[i - period + 1 : i + 1], strict=True))
                      / sum(w) if i >= period - 1 else NAN for i in range(len(x))]}


def ref_macd(b: Bars, fast: int = 12, slow: int = 26, signal: int = 9) -> dict[str, Series]:
    line = sub(ewm_recursive(b["c"], span(fast)), ewm_recursive(b["c"], span(slow)))
    sig = ewm_recursive(line, span(signal))
    return {"line": line, "signal": sig, "histogram": sub(line, sig)}


def ref_distancefromma(b: Bars, period: int = 20, ma_type: str = "SMA") -> dict[str, Series]:
    x = b["c"]
    ma = sma(x, period) if ma_type == "SMA" else ewm_weighted(x, span(period))
    return {"value": [NAN if math.isnan(m) else 0.0 if abs(m) <= 1e-10 else 100 * (p - m) / m
                      for p, m in zip(x, ma, strict=True)]}


def ref_adx(b: Bars, period: int = 14) -> dict[str, Series]:
    h, low, c, a = b["h"], b["l"], b["c"], 1 / period
    plus_dm, minus_dm = [0.0], [0.0]
    for i in range(1, len(c)):
        up, down = h[i] - h[i - 1], low[i - 1] - low[i]
        plus_dm.append(up if up > down and up > 0 else 0.0)
        minus_dm.append(down if down > up and down > 0 else 0.0)
    tr = ewm_recursive(true_range(h, low, c), a)
    pdi = [100 * p / t if t != 0 else 0.0 for p, t in zip(ewm_recursive(plus_dm, a), tr,
                                                          strict=True)]
    mdi = [100 * m / t if t != 0 else 0.0 for m, t in zip(ewm_recursive(minus_dm, a), tr,
                                                          strict=True)]
    dx = [100 * abs(p - m) / (p + m) if p + m != 0 else 0.0 for p, m in zip(pdi, mdi, strict=True)]
    return {"adx": ewm_recursive(dx, a), "plus_di": pdi, "minus_di": mdi}


def ref_parabolicsar(b: Bars, initial_af: float = 0.02, step_af: float = 0.02,
                     max_af: float = 0.2) -> dict[str, Series]:
    h, low, c = b["h"], b["l"], b["c"]
    sar = nans(len(c))
    up = c[1] > c[0]
    sar[1], ep, af = (low[0], h[1], initial_af) if up else (h[0], low[1], initial_af)
    for i in range(2, len(c)):
        s = sar[i - 1] + af * (ep - sar[i - 1])
        if up and low[i] <= s:
            up, s, af, ep = False, ep, initial_af, low[i]
        elif up:
            s = min(s, low[i - 1], low[i - 2])
            if h[i] > ep:
                ep, af = h[i], min(af + step_af, max_af)
        elif h[i] >= s:
            up, s, af, ep = True, ep, initial_af, h[i]
        else:
            s = max(s, h[i - 1], h[i - 2])
            if low[i] < ep:
                ep, af = low[i], min(af + step_af, max_af)
        sar[i] = s
    return {"value": sar}


def _mid(b: Bars, n: int) -> Series:
    return [(p + q) / 2 for p, q in zip(highest(b["h"], n), lowest(b["l"], n), strict=True)]


def ref_ichimoku(b: Bars, tenkan: int = 9, kijun: int = 26, senkou_b: int = 52,
                 displacement: int = 26) -> dict[str, Series]:
    """KTRDR's lines; its senkou spans are not shifted (ours: the test shifts them)."""
    t, k = _mid(b, tenkan), _mid(b, kijun)
    return {"tenkan": t, "kijun": k, "senkou_a": [(p + q) / 2 for p, q in zip(t, k, strict=True)],
            "senkou_b": _mid(b, senkou_b), "chikou": list(b["c"])}


def ref_supertrend(b: Bars, period: int = 10, multiplier: float = 3.0) -> dict[str, Series]:
    """The textbook SuperTrend on KTRDR's bands, seeded at the first bar that has an ATR."""
    h, low, c = b["h"], b["l"], b["c"]
    atr = sma(true_range(h, low, c), period)
    trend, direction = nans(len(c)), nans(len(c))
    fu = fl = NAN
    for i in range(period - 1, len(c)):
        bu = (h[i] + low[i]) / 2 + multiplier * atr[i]
        bl = (h[i] + low[i]) / 2 - multiplier * atr[i]
        if i == period - 1:
            fu, fl, d = bu, bl, (-1 if c[i] <= bl else 1)
        else:
            fu = bu if bu < fu or c[i - 1] > fu else fu
            fl = bl if bl > fl or c[i - 1] < fl else fl
            d = (-1 if c[i] <= fl else 1) if d == 1 else (1 if c[i] >= fu else -1)
        trend[i], direction[i] = (fl if d == 1 else fu), float(d)
    return {"trend": trend, "direction": direction}


def ref_zigzag(b: Bars, threshold: float = 0.05) -> dict[str, Series]:
    x = b["c"]
    result = nans(len(x))
    result[0], last_i, last, direction = x[0], 0, x[0], None
    for i in range(1, len(x)):
        move = (x[i] - last) / last
        if direction is None and abs(move) >= threshold:
            direction = 1 if move > 0 else -1
        elif direction == 1 and x[i] > last or direction == -1 and x[i] < last:
            result[last_i] = NAN
        elif direction == 1 and move <= -threshold:
            direction = -1
        elif direction == -1 and move >= threshold:
            direction = 1
        else:
            continue
        result[i], last_i, last = x[i], i, x[i]
    return {"value": result}


def ref_roc(b: Bars, period: int = 10) -> dict[str, Series]:
    x = b["c"]
    return {"value": [100 * (x[i] - x[i - period]) / x[i - period] if i >= period else NAN
                      for i in range(len(x))]}


def ref_momentum(b: Bars, period: int = 10) -> dict[str, Series]:
    x = b["c"]
    return {"value": [x[i] - x[i - period] if i >= period else NAN for i in range(len(x))]}


def _typical(b: Bars) -> Series:
    return [(h + low + c) / 3 for h, low, c in zip(b["h"], b["l"], b["c"], strict=True)]


def ref_cci(b: Bars, period: int = 20) -> dict[str, Series]:
    tp, result = _typical(b), nans(len(b["c"]))
    for i in range(period - 1, len(tp)):
        window = tp[i - period + 1 : i + 1]
        mean = sum(window) / period
        deviation = sum(abs(v - mean) for v in window) / period
        result[i] = (tp[i] - mean) / (0.015 * deviation)
    return {"value": result}


def ref_williamsr(b: Bars, period: int = 14) -> dict[str, Series]:
    hh, ll, c = highest(b["h"], period), lowest(b["l"], period), b["c"]
    return {"value": [-100 * (hh[i] - c[i]) / (hh[i] - ll[i]) if hh[i] - ll[i] > 0 else -50.0
                      for i in range(len(c))]}


def ref_stochastic(b: Bars, k_period: int = 14, d_period: int = 3,
                   smooth_k: int = 3) -> dict[str, Series]:
    hh, ll, c = highest(b["h"], k_period), lowest(b["l"], k_period), b["c"]
    raw = [100 * (c[i] - ll[i]) / (hh[i] - ll[i]) if hh[i] - ll[i] > 0 else 50.0
           for i in range(len(c))]
    k = sma(raw, smooth_k, min_periods=1)
    return {"k": k, "d": sma(k, d_period, min_periods=1)}


def ref_rvi(b: Bars, period: int = 10, signal_period: int = 4) -> dict[str, Series]:
    co = sub(b["c"], b["o"])
    hl = sub(b["h"], b["l"])

    def weighted(x: Series) -> Series:
        return nans(3) + [(x[i - 3] + 2 * x[i - 2] + 2 * x[i - 1] + x[i]) / 6
                          for i in range(3, len(x))]

    num, den = sma(weighted(co), period), sma(weighted(hl), period)
    rvi = [p / q if not math.isnan(q) and q != 0 else NAN for p, q in zip(num, den, strict=True)]
    return {"rvi": rvi, "signal": sma(rvi, signal_period)}


def ref_fishertransform(b: Bars, period: int = 10, smoothing: int = 3) -> dict[str, Series]:
    hh, ll = highest(b["h"], period), lowest(b["l"], period)
    raw = nans(len(hh))
    for i in range(period - 1, len(hh)):
        mid = (b["h"][i] + b["l"][i]) / 2
        x = 2 * (mid - ll[i]) / (hh[i] - ll[i]) - 1 if hh[i] != ll[i] else 0.0
        x = min(max(x, -0.999), 0.999)
        raw[i] = 0.5 * math.log((1 + x) / (1 - x))
    fisher = ewm_recursive(raw, span(smoothing))
    return {"fisher": fisher, "signal": shifted(fisher, 1)}


def ref_aroon(b: Bars, period: int = 14) -> dict[str, Series]:
    up, down = nans(len(b["c"])), nans(len(b["c"]))
    for i in range(period - 1, len(b["c"])):
        highs, lows = b["h"][i - period + 1 : i + 1], b["l"][i - period + 1 : i + 1]
        since_high = period - 1 - highs.index(max(highs))  # index(): the earliest of ties
        since_low = period - 1 - lows.index(min(lows))
        up[i] = 100 * (period - since_high) / period
        down[i] = 100 * (period - since_low) / period
    return {"up": up, "down": down, "oscillator": sub(up, down)}


def ref_atr(b: Bars, period: int = 14) -> dict[str, Series]:
    return {"value": sma(true_range(b["h"], b["l"], b["c"]), period)}


def ref_bollingerbands(b: Bars, period: int = 20, multiplier: float = 2.0) -> dict[str, Series]:
    mid, sd = sma(b["c"], period), sample_std(b["c"], period)
    return {"upper": [m + multiplier * s for m, s in zip(mid, sd, strict=True)], "middle": mid,
            "lower": [m - multiplier * s for m, s in zip(mid, sd, strict=True)]}


def ref_bollingerbandwidth(b: Bars, period: int = 20, multiplier: float = 2.0
                           ) -> dict[str, Series]:
    bands = ref_bollingerbands(b, period, multiplier)
    return {"value": [(u - lo) / m if abs(m) > 1e-10 else 0.0  # NaN middle: 0.0 (KTRDR)
                      for u, m, lo in zip(bands["upper"], bands["middle"], bands["lower"],
                                          strict=True)]}


def ref_keltnerchannels(b: Bars, period: int = 20, atr_period: int = 10,
                        multiplier: float = 2.0) -> dict[str, Series]:
    mid = ewm_recursive(b["c"], span(period))
    atr = sma(true_range(b["h"], b["l"], b["c"]), atr_period)
    return {"upper": [m + multiplier * a for m, a in zip(mid, atr, strict=True)], "middle": mid,
            "lower": [m - multiplier * a for m, a in zip(mid, atr, strict=True)]}


def ref_donchianchannels(b: Bars, period: int = 20) -> dict[str, Series]:
    upper, lower = highest(b["h"], period), lowest(b["l"], period)
    return {"upper": upper, "middle": [(u + lo) / 2 for u, lo in zip(upper, lower, strict=True)],
            "lower": lower}


def ref_squeezeintensity(b: Bars, bb_period: int = 20, bb_multiplier: float = 2.0,
                         kc_period: int = 20, kc_multiplier: float = 2.0) -> dict[str, Series]:
    bb = ref_bollingerbands(b, bb_period, bb_multiplier)
    kc = ref_keltnerchannels(b, kc_period, 10, kc_multiplier)
    result = []
    for bu, bl, ku, kl in zip(bb["upper"], bb["lower"], kc["upper"], kc["lower"], strict=True):
        r = ku - kl
        if not abs(r) > 1e-10:  # also a NaN r
            result.append(0.0)
        elif math.isnan(bu):
            result.append(NAN)
        else:
            result.append(max(0.0, min((ku - bu) / r, (bl - kl) / r)))
    return {"value": result}  # KTRDR: 0.0 while r is NaN, NaN while only the BB is


def ref_obv(b: Bars) -> dict[str, Series]:
    c, v, obv = b["c"], b["v"], [0.0]
    for i in range(1, len(c)):
        obv.append(obv[-1] + v[i] if c[i] > c[i - 1] else obv[-1] - v[i] if c[i] < c[i - 1]
                   else obv[-1])
    return {"value": obv}


def ref_vwap(b: Bars, period: int = 20, use_typical_price: bool = True) -> dict[str, Series]:
    price = _typical(b) if use_typical_price else b["c"]
    pv = [p * v for p, v in zip(price, b["v"], strict=True)]
    n = len(pv) if period == 0 else period
    num, den = rolling_sum(pv, n, 1), rolling_sum(b["v"], n, 1)
    return {"value": [p / q if q != 0 else NAN for p, q in zip(num, den, strict=True)]}


def ref_mfi(b: Bars, period: int = 14) -> dict[str, Series]:
    tp, v = _typical(b), b["v"]
    result = nans(len(tp))
    for i in range(period, len(tp)):
        pos = sum(tp[j] * v[j] for j in range(i - period + 1, i + 1) if tp[j] > tp[j - 1])
        neg = sum(tp[j] * v[j] for j in range(i - period + 1, i + 1) if tp[j] < tp[j - 1])
        result[i] = 100.0 if neg == 0 else 0.0 if pos == 0 else 100 - 100 / (1 + pos / neg)
    return {"value": result}


def ref_cmf(b: Bars, period: int = 21) -> dict[str, Series]:
    mult = money_flow_multiplier(b["h"], b["l"], b["c"])
    mfv = [m * v for m, v in zip(mult, b["v"], strict=True)]
    sums, vols = rolling_sum(mfv, period), rolling_sum(b["v"], period)
    cmf = [s / q if q != 0 else 0.0 for s, q in zip(sums, vols, strict=True)]  # NaN stays NaN
    signal = ewm_recursive(cmf, span(9))
    return {"cmf": cmf, "mf_multiplier": mult, "mf_volume": mfv,
            "momentum": sub(cmf, shifted(cmf, 5)), "signal": signal, "histogram": sub(cmf, signal),
            "above_zero": [float(x > 0) for x in cmf], "below_zero": [float(x < 0) for x in cmf]}


def ref_adline(b: Bars, smoothing_period: int = 21) -> dict[str, Series]:
    mult = money_flow_multiplier(b["h"], b["l"], b["c"])
    mfv = [m * v for m, v in zip(mult, b["v"], strict=True)]
    line, total = [], 0.0
    for x in mfv:
        total += x
        line.append(total)
    avg50 = sma(line, 50, min_periods=20)
    return {"line": line, "mf_multiplier": mult, "mf_volume": mfv,
            "roc_10": [100 * (line[i] / line[i - 10] - 1) if i >= 10 else NAN
                       for i in range(len(line))],
            "momentum_21": sub(line, shifted(line, 21)),
            "relative_strength": [100 * (x / a - 1) for x, a in zip(line, avg50, strict=True)],
            f"line_sma_{smoothing_period}": sma(line, smoothing_period)}


def ref_volumeratio(b: Bars, period: int = 20) -> dict[str, Series]:
    avg = sma(b["v"], period)
    return {"value": [v / a if abs(a) > 1e-10 else 1.0  # NaN average: 1.0 (KTRDR)
                      for v, a in zip(b["v"], avg, strict=True)]}
