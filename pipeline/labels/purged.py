"""The purged chronological split for labels that look H bars ahead (triple barrier).

KTRDR's ``purged_train_val_split`` as its local orchestrator calls it (grammar doc 3.3): the
last (validation + test) share of rows is held out; training keeps only rows whose window
[i, i + H) ends by the held-out start, minus an embargo of 1 % of the rows before it. The
held-out block is then cut in two, validation first. Every row's window is taken as the full
H (the conservative choice KTRDR makes), so no training label sees a held-out bar's price.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EMBARGO = 0.01


def purged_split(n: int, hold: int, ratios: Mapping[str, float], embargo: float = EMBARGO
                 ) -> dict[str, np.ndarray]:
    """Row indices for train, validation and test out of ``n`` chronological rows.

    ``ratios`` has "train" and "validation", and "test" (default 1 - train - validation).
    """
    train_ratio, val_ratio = ratios["train"], ratios["validation"]
    test_ratio = ratios.get("test", max(0.0, 1.0 - train_ratio - val_ratio))
    held_out = min(val_ratio + test_ratio, 1.0)
    start = int(n * (1 - held_out))
    rows = np.arange(max(0, start - int(embargo * n)))
    train = rows[rows + hold <= start]
    rest = np.arange(start, n)
    n_val = int(len(rest) * (val_ratio / held_out)) if held_out > 0 else 0
    return {"train": train, "validation": rest[:n_val], "test": rest[n_val:]}
