"""The key of one breach decision: which gap of which attribute (and, in a subgroup search, which cell)."""

from __future__ import annotations

from typing import Any

__all__ = ["DecisionKey"]


class DecisionKey(tuple):
    """What one decision is about: the gap ``metric`` of ``attribute``, or of one ``cell`` of a searched
    intersection (``attribute`` "race&sex", ``cell`` "Black&Female").

    Immutable and hashable. It is the tuple ``(attribute, metric)``, or ``(attribute, metric, cell)`` for a
    cell, so it equals (and looks up as) that plain tuple; its parts are read by name, never parsed from
    text. A tuple rather than a NamedTuple because a NamedTuple's ``cell=None`` would make every key three
    long, and ``("sex", "demographic_parity_difference")`` no longer find its decision.

    >>> key = DecisionKey("race&sex", "subgroup_tpr_difference", cell="Black&Female")
    >>> key.attribute, key.metric, key.cell
    ('race&sex', 'subgroup_tpr_difference', 'Black&Female')
    >>> gap = DecisionKey("sex", "demographic_parity_difference")
    >>> gap == ("sex", "demographic_parity_difference"), gap.cell is None
    (True, True)
    >>> {gap: "state"}[("sex", "demographic_parity_difference")]
    'state'
    >>> gap
    DecisionKey(attribute='sex', metric='demographic_parity_difference')

    ``attribute`` is usually a string; the generation decisions name their carrier attributes with a
    ``DecisionKey`` (monitor.generation.decisions).
    """

    __slots__ = ()

    def __new__(cls, attribute: Any, metric: str, cell: str | None = None) -> DecisionKey:
        return tuple.__new__(cls, (attribute, metric) if cell is None else (attribute, metric, cell))

    def __getnewargs__(self) -> tuple:  # pickle and copy call __new__ with the parts, not with one tuple
        return tuple(self)

    @property
    def attribute(self) -> Any:
        return self[0]

    @property
    def metric(self) -> str:
        return self[1]

    @property
    def cell(self) -> str | None:
        return self[2] if len(self) > 2 else None

    def __repr__(self) -> str:
        cell = "" if self.cell is None else f", cell={self.cell!r}"
        return f"DecisionKey(attribute={self.attribute!r}, metric={self.metric!r}{cell})"
