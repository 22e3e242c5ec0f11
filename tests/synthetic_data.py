"""Seeded test data for what KTRDR's strategies need and the project does not bundle.

KTRDR's own strategy files ask for EURUSD 5m bars, GBPUSD and USDJPY hourly bars, FRED rates and
CFTC positioning. None of that is bundled (only real files are), and nothing is downloaded: these
functions make it from a seed, into a test's temporary data root, laid out as a user's would be.

The 5m bars refine the bundled EURUSD hourly bars: each hour's twelve 5m bars open at its open,
close at its close, stay within its high and low and touch both, so resampling them gives the
hourly file back exactly. The other pairs move with EURUSD's hourly returns (GBPUSD with,
USDJPY against) on the same timestamps; the rates and positions are random walks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.market_data import default_data_root, read_price_file

FIVE_MINUTES = 12  # bars per hour
FRED_SPAN = ("2014-01-01", "2018-03-30")
COT_SPAN = ("2014-01-07", "2018-03-27")  # Tuesdays, the COT report day


def five_minute_bars(hourly: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Twelve 5m bars per hourly bar, consistent with it (see the module docstring)."""
    rng = np.random.default_rng(seed)
    o, h, lo, c = (hourly[k].to_numpy()[:, None] for k in ("open", "high", "low", "close"))
    n = len(hourly)
    # A Brownian bridge from the open to the close, clipped into the hour's range.
    steps = rng.standard_normal((n, FIVE_MINUTES)).cumsum(axis=1)
    k = np.arange(1, FIVE_MINUTES + 1) / FIVE_MINUTES
    bridge = steps - k * steps[:, -1:]
    path = o + (c - o) * k + bridge * (h - lo) / 6
    path[:, -1] = c[:, 0]
    path = np.clip(path, lo, h)
    opens = np.concatenate([o, path[:, :-1]], axis=1)
    closes = path
    top, bottom = np.maximum(opens, closes), np.minimum(opens, closes)
    highs = top + rng.uniform(0, 0.3, (n, FIVE_MINUTES)) * (h - top)
    lows = bottom - rng.uniform(0, 0.3, (n, FIVE_MINUTES)) * (bottom - lo)
    rows = np.arange(n)
    highs[rows, rng.integers(0, FIVE_MINUTES, n)] = h[:, 0]  # the hour's high and low
    lows[rows, rng.integers(0, FIVE_MINUTES, n)] = lo[:, 0]  # are reached in some bar
    volume = rng.multinomial(hourly["volume"].to_numpy().astype(np.int64),
                             np.full(FIVE_MINUTES, 1 / FIVE_MINUTES))
    starts = hourly.index.asi8[:, None]
    offsets = np.arange(FIVE_MINUTES)[None, :] * pd.Timedelta(minutes=5).value
    index = pd.to_datetime((starts + offsets).ravel(), unit="ns", utc=True)
    return pd.DataFrame(
        {"open": opens.ravel(), "high": highs.ravel(), "low": lows.ravel(),
         "close": closes.ravel(), "volume": volume.ravel().astype(np.float64)},
        index=index.rename("timestamp"),
    )


def related_pair(hourly: pd.DataFrame, seed: int, start: float, correlation: float,
                 volatility: float) -> pd.DataFrame:
    """Hourly bars of another pair on the same timestamps, correlated with ``hourly``'s returns."""
    rng = np.random.default_rng(seed)
    base = np.diff(np.log(hourly["close"].to_numpy()), prepend=np.log(hourly["open"].iloc[0]))
    scale = volatility / base.std()
    noise = rng.standard_normal(len(base)) * base.std()
    returns = scale * (correlation * base + np.sqrt(1 - correlation**2) * noise)
    closes = start * np.exp(returns.cumsum())
    opens = np.concatenate([[start], closes[:-1]])
    wick = np.abs(rng.standard_normal((2, len(base)))) * volatility * 0.5
    return pd.DataFrame(
        {"open": opens, "high": np.maximum(opens, closes) * (1 + wick[0]),
         "low": np.minimum(opens, closes) * (1 - wick[1]), "close": closes,
         "volume": rng.integers(500, 3000, len(base)).astype(np.float64)},
        index=hourly.index,
    )


def fred_series(seed: int, level: float, step: float, freq: str = "B",
                missing_every: int = 0) -> pd.Series:
    """A rate as FRED publishes it: a random walk on business days (or month starts, ``MS``);
    every ``missing_every``-th observation is missing (FRED's "." on holidays)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(*FRED_SPAN, freq=freq)
    values = np.round(level + np.cumsum(rng.standard_normal(len(dates)) * step), 2)
    series = pd.Series(values, index=dates)
    if missing_every:
        series.iloc[missing_every - 1::missing_every] = np.nan
    return series


def cot_positions(seed: int) -> pd.Series:
    """Weekly (Tuesday) net positions of leveraged funds, a random walk in contracts."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(*COT_SPAN, freq="W-TUE")
    return pd.Series(np.cumsum(rng.integers(-8000, 8001, len(dates))) + 20000, index=dates)


def write_data_root(root: Path, seed: int = 7) -> Path:
    """A data root holding the bundled EURUSD hourly file and every generated file beside it.

    FRED's DGS2 is written as FRED's own download (``observation_date,DGS2``, "." for missing),
    the monthly German rate in the plain ``date,value`` layout, the COT report as
    ``date,net_position``: both layouts are read.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(default_data_root() / "EURUSD_1h.csv", root / "EURUSD_1h.csv")
    hourly = read_price_file(root / "EURUSD_1h.csv")
    five_minute_bars(hourly, seed).to_csv(root / "EURUSD_5m.csv")
    related_pair(hourly, seed + 1, 1.25, 0.7, 0.0012).to_csv(root / "GBPUSD_1h.csv")
    related_pair(hourly, seed + 2, 110.0, -0.5, 0.0010).to_csv(root / "USDJPY_1h.csv")
    (root / "fred").mkdir(exist_ok=True)
    dgs2 = fred_series(seed + 3, 1.5, 0.01, missing_every=23)
    pd.DataFrame({"observation_date": dgs2.index.strftime("%Y-%m-%d"),
                  "DGS2": dgs2.map(lambda v: "." if np.isnan(v) else f"{v:.2f}")}
                 ).to_csv(root / "fred" / "DGS2.csv", index=False)
    german = fred_series(seed + 4, 0.6, 0.08, freq="MS")
    pd.DataFrame({"date": german.index.strftime("%Y-%m-%d"), "value": german.to_numpy()}
                 ).to_csv(root / "fred" / "IRLTLT01DEM156N.csv", index=False)
    (root / "cot").mkdir(exist_ok=True)
    cot = cot_positions(seed + 5)
    pd.DataFrame({"date": cot.index.strftime("%Y-%m-%d"), "net_position": cot.to_numpy()}
                 ).to_csv(root / "cot" / "EUR.csv", index=False)
    return root
