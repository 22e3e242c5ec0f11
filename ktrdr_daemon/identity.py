"""Who is alive: process identities and the liveness judge (spec 3.1-3.3).

Nothing here trusts a clock of another host: on this host a pid and its start time prove a death
at once; elsewhere, a counter that stops changing on the reader's own monotonic clock does.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from ktrdr_daemon.layout import is_safe_name

try:  # psutil is optional: /proc answers the same questions on Linux
    import psutil
except ImportError:  # pragma: no cover - depends on the installation
    psutil = None

T_EXPIRE_S = 30.0  # a counter unchanged this long on the reader's clock is a dead owner (3.3)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) from /proc, or None when there is no such pid."""
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], fields[19]


def process_start_time(pid: int) -> str | None:
    """An opaque value that differs when a pid is reused, or None when it cannot be known."""
    if os.path.isdir("/proc/self"):
        found = _proc_stat(pid)
        return found[1] if found else None
    if psutil is not None:
        try:
            return repr(psutil.Process(pid).create_time())
        except psutil.Error:
            return None
    return None


def pid_is_alive(pid: int, start_time: str | None) -> bool:
    """False only when provably dead: no such pid, a zombie, or another process (start time)."""
    if os.path.isdir("/proc/self"):
        found = _proc_stat(pid)
        if found is None or found[0] in ("Z", "X"):
            return False
        return start_time is None or found[1] == start_time
    if psutil is not None:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return start_time is None or repr(process.create_time()) == start_time
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _boot_id() -> str | None:
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    if boot is None and psutil is not None:
        boot = f"boot-time:{psutil.boot_time()}"
    return boot


def _pid_namespace() -> str | None:
    """Containers on one host share the boot id but not pids: compare the namespace too."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None if os.path.isdir("/proc/self") else "host"


@dataclass(frozen=True)
class DaemonIdentity:
    """Who claims: enough to prove on the same host that the claimer is gone (spec 3.1)."""

    daemon_id: str
    host: str
    pid: int
    pid_start: str | None
    boot_id: str | None
    pid_ns: str | None

    @classmethod
    def current(cls, daemon_id: str) -> DaemonIdentity:
        if not is_safe_name(daemon_id):
            raise ValueError(f"not a daemon id: {daemon_id!r} (allowed: [A-Za-z0-9_.-]{{1,64}})")
        pid = os.getpid()
        return cls(
            daemon_id,
            socket.gethostname(),
            pid,
            process_start_time(pid),
            _boot_id(),
            _pid_namespace(),
        )

    def record(self) -> dict[str, Any]:
        return {
            "daemon": self.daemon_id,
            "host": self.host,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "boot_id": self.boot_id,
            "pid_ns": self.pid_ns,
        }


class LivenessJudge:
    """One per daemon: says whether the owner of a claim or heartbeat is dead (spec 3.3).

    Dead at once: same host (boot id, pid namespace and host name equal) and its pid is gone or
    now another process. Dead later: its counter stayed the same for ``t_expire`` seconds of
    this process's monotonic clock. A judge that has just started has no history, so everything
    it sees for the first time is alive until silent for ``t_expire``.
    """

    def __init__(self, me: DaemonIdentity, t_expire: float = T_EXPIRE_S) -> None:
        self.me, self.t_expire = me, t_expire
        self._seen: dict[str, tuple[Any, float]] = {}

    def same_host(self, record: dict[str, Any]) -> bool:
        me = self.me
        return (
            me.boot_id is not None
            and me.pid_ns is not None
            and record.get("boot_id") == me.boot_id
            and record.get("pid_ns") == me.pid_ns
            and record.get("host") == me.host
        )

    def death(self, key: str, record: dict[str, Any], counter: Any) -> str | None:
        """The reason the owner is dead, or None while it may be alive."""
        pid = record.get("pid")
        same_host = self.same_host(record) and isinstance(pid, int)
        if same_host and not pid_is_alive(pid, record.get("pid_start")):
            return f"process {pid} on {record.get('host')} is gone"
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != counter:
            self._seen[key] = (counter, now)
            return None
        if now - seen[1] >= self.t_expire:
            return f"no heartbeat for {now - seen[1]:.1f} s"
        return None

    def silent_for(self, key: str) -> float:
        seen = self._seen.get(key)
        return 0.0 if seen is None else time.monotonic() - seen[1]

    def keep_only(self, prefix: str, keys: set[str]) -> None:
        """Forget owners under ``prefix`` no longer watched, so a long-lived daemon stays small."""
        for key in [k for k in self._seen if k.startswith(prefix) and k not in keys]:
            del self._seen[key]
