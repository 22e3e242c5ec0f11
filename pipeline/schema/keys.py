"""Unknown keys: a near miss of a known key is a typo (an error that names the key meant),
anything else is a key KTRDR also ignores (a warning, an error under ``--strict``).

A typo such as ``trainig:`` or ``epoch: 50`` would otherwise train with defaults and publish a
model the user did not ask for, so it must stop the job. Keys KTRDR carries and does not use
(``scope``, ``decisions.confidence_threshold``) are in nearly every KTRDR file and change nothing
that is trained, so they stay warnings unless the user asks for strict checking.
"""

from __future__ import annotations

from collections.abc import Iterable

# Edit distance that counts as a typo; keys of four letters or fewer allow one edit only, so
# short keys (``seed``, ``type``) are not taken for each other's misspellings.
MAX_DISTANCE = 2
SHORT_KEY = 4


def edit_distance(a: str, b: str, limit: int = MAX_DISTANCE) -> int:
    """Damerau-Levenshtein (adjacent swaps count one) distance, capped at ``limit + 1``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return min(prev[-1], limit + 1)


def near_miss(key: str, known: Iterable[str]) -> str | None:
    """The known key ``key`` is probably a typo of, or None. Case is ignored (``Epochs``)."""
    best, best_distance = None, MAX_DISTANCE + 1
    for candidate in known:
        shortest = min(len(key), len(candidate))
        allowed = 1 if shortest <= SHORT_KEY else MAX_DISTANCE
        distance = edit_distance(key.lower(), candidate.lower(), allowed)
        if 0 < distance <= allowed and distance < best_distance or (
            distance == 0 and key != candidate
        ):
            best, best_distance = candidate, distance
    return best


def did_you_mean(key: str, known: Iterable[str]) -> str | None:
    """The error text for a near-miss ``key``, or None when it is no near miss."""
    meant = near_miss(key, known)
    if meant is None:
        return None
    return f"unknown key; did you mean {meant!r}?"
