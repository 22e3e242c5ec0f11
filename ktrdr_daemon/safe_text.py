"""Text from the spool made safe for a terminal.

The spool is a shared folder: anyone who can write a file there (a drop, a log line through a
job's strategy, a hand-edited job.yaml or claim record) chooses bytes that ``show``, ``ls`` and
``tail`` print. A terminal obeys escape sequences in them: retitle the window, clear the
screen, rewrite earlier lines, and on some terminals worse. :func:`printable` is the one place
that turns such characters into visible escapes; every reader prints spool text through it.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline (ESC, BEL, CR, backspace included), DEL, the C1 range,
# and the Unicode bidirectional overrides that reorder what a reader sees ("Trojan source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN`` (``\\uNNNN`` for the bidi
    overrides); newlines and tabs are kept. An escape sequence such as ``ESC ] 0 ; title BEL``
    prints as the harmless text ``\\x1b]0;title\\x07``: visible, never obeyed."""
    return _UNSAFE.sub(_escape, text)
