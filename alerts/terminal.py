"""Text from alerts made safe for a terminal.

Label values and annotations come from whoever can reach Alertmanager; a
value holding ``ESC [ 2 J`` would clear the screen of the on-call reading
``fairwatch incidents list``, or worse. Control characters are shown as
escapes instead.

>>> printable("credit\\x1b[2Jrisk\\tok")
'credit\\\\x1b[2Jrisk\\\\tok'
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every control or format character (C0, C1, DEL, bidi overrides) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in "\t\n\r":
        return repr(ch)[1:-1]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


__all__ = ["printable"]
