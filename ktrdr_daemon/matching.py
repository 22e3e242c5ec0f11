"""Which daemon runs which job (spool spec section 4), as one pure decision.

    job                          a GPU daemon     a CPU daemon
    mode: gpu or require_gpu     claims           never; fails it fast if no GPU daemon lives
    mode: local                  does not claim   claims
    mode: auto                   claims first     only when no live GPU daemon has a free slot

No decision waits on a network timeout: a daemon with no heartbeat is simply not alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ktrdr_daemon.spool import wants_gpu


@dataclass(frozen=True)
class Decision:
    """Claim it (with a note for the job's log), leave it to another daemon, or fail it."""

    claim: bool
    note: str | None = None
    fail: str | None = None


LEAVE = Decision(False)


def decide(execution: dict[str, Any], *, is_gpu: bool, live_daemons: list[dict[str, Any]],
           waited_s: float) -> Decision:
    """What this daemon does with a queued job; ``waited_s``: since it first saw the job."""
    mode = execution.get("mode", "auto")
    if is_gpu:
        return Decision(mode != "local")
    if mode == "local":
        return Decision(True)
    gpus = [d for d in live_daemons if d.get("alive") and d.get("device", "cpu") != "cpu"]
    if wants_gpu(execution):
        if not gpus and waited_s >= float(execution.get("wait_for_gpu") or 0):
            return Decision(False, fail="no GPU daemon is alive (execution asks for a GPU; set "
                                        "execution.wait_for_gpu to wait, or mode: auto to allow "
                                        "the CPU)")
        return LEAVE
    if any(d.get("free_slots", 0) > 0 for d in gpus):
        return LEAVE  # a live GPU daemon with a free slot goes first
    reason = "no GPU daemon alive" if not gpus else "every GPU daemon is busy"
    return Decision(True, note=f"running on CPU: {reason}")
