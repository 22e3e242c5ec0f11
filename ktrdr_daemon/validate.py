"""Turning a dropped file's body into the accepted job (what ``job.yaml`` holds).

The spool protocol calls :func:`validate_job` for every drop. It resolves the strategy (a file
under the strategies root, an inline mapping, or the drop itself when it is a v3 strategy) and
stores the *resolved* strategy in the job, so editing the strategy file later never changes a
queued job.
"""

from __future__ import annotations

from typing import Any

from ktrdr_daemon.settings import Settings
from pipeline.job import load_job


def validate_job(body: dict[str, Any], source: str,
                 settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """Return (the job's normalized body, warnings); raise with every problem otherwise."""
    job = load_job(body, strategies_root=settings.strategies, source_name=source,
                   strict=settings.strict)
    strategy = job.strategy
    normalized = {
        "strategy_name": strategy.name,
        "symbols": strategy.symbols,
        "timeframes": strategy.timeframes,
        "seed": job.seed,
        "strategy": strategy.raw,
    }
    if "group" in job.normalized:  # a tag of related jobs (``ls --group``)
        normalized["group"] = job.normalized["group"]
    return normalized, list(job.warnings)
