"""Which alert label values may reach a command line, a file path or a PromQL query.

Alertmanager relays whatever labels a rule (or anyone who can post to it)
sets. The trigger pastes ``model`` and ``attribute`` into the fine-tune
command and the evidence queries, so it accepts them only as identifiers:
letters, digits and ``_ . : & -`` (``&`` joins intersections such as
``race&sex``), at most 128 characters, no leading ``-`` (it would read as an
option) and no ``..`` (it would climb out of a folder).

>>> unsafe_label_reason("model", "credit-risk") is None
True
>>> unsafe_label_reason("attribute", "--device")
'attribute must not start with "-"'
>>> promql_string('a"b')
'"a\\\\"b"'
"""

from __future__ import annotations

import re

MAX_LABEL_CHARS = 128
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:&-]+")
ALLOWED_DESCRIPTION = "letters, digits and _ . : & -"


def unsafe_label_reason(name: str, value: str) -> str | None:
    """Why ``value`` may not be used as the ``name`` label of a job or a query; None when it may."""
    if not value:
        return f"{name} is empty"
    if len(value) > MAX_LABEL_CHARS:
        return f"{name} is longer than {MAX_LABEL_CHARS} characters"
    if not IDENTIFIER.fullmatch(value):
        return f"{name} {value[:40]!r} holds characters other than {ALLOWED_DESCRIPTION}"
    if value.startswith("-"):
        return f'{name} must not start with "-"'
    if ".." in value:
        return f'{name} must not contain ".."'
    return None


def promql_string(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal (Go escaping), whatever it holds."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def promql_matchers(labels: dict[str, str]) -> str:
    """``name="value",...`` with every value escaped, for inside ``{...}``."""
    return ",".join(f"{name}={promql_string(value)}" for name, value in labels.items())
