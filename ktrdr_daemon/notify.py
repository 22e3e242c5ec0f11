"""The sender half of systemd's ``Type=notify`` protocol (sd_notify(3)), without libsystemd.

systemd passes the socket in ``NOTIFY_SOCKET``: a file-system path, or a name in Linux's abstract
namespace written with a leading ``@``. A message is one datagram of newline-separated
``KEY=VALUE`` lines: ``READY=1`` once the daemon serves, ``STOPPING=1`` when it begins to shut down,
``STATUS=...`` a line ``systemctl status`` shows. With ``NotifyAccess=main`` only the daemon's
main process may send; messages from worker children are dropped by systemd.

Outside systemd (launchd, a terminal, a container) ``NOTIFY_SOCKET`` is unset and every call is
a cheap no-op, so the daemon calls it unconditionally.
"""

from __future__ import annotations

import os
import socket


def sd_notify(message: str) -> bool:
    """Send ``message`` to the service manager; True if a datagram went out.

    Never raises: a manager that went away must not take the daemon down with it.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace: no file, no permissions to get wrong
    elif not address.startswith("/"):
        return False  # unset, or a transport we do not speak (e.g. systemd's "vsock:")
    data = message.encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            return sock.sendto(data, address) == len(data)
    except OSError:
        return False
