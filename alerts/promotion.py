"""Can the incident's candidate be promoted? The held-out gates and the live shadow, in one verdict with numbers.

Pure functions over an incident's ``job`` record: ``report.decision`` (the
fine-tune's gates on its held-out split) and ``shadow`` (the candidate against
production on the same live events, :mod:`alerts.shadow_comparison`).
``promotable`` is True only when both passed, False when either failed, and
None when the held-out gates passed but the candidate has not been compared on
live traffic yet (then ``incidents promote`` still works, and says so).

>>> job = {"state": "succeeded", "report": {"decision": {"promote": True, "gap_before": 0.4, "gap_after": 0.1,
...        "gates": {"metric": "fped", "attribute": "*"}}, "before": {"accuracy": 0.9}, "after": {"accuracy": 0.89}}}
>>> promotion_verdict(job).promotable is None
True
>>> job["shadow"] = {"passed": True, "events": 480, "reasons": [], "metrics": [{"metric": "demographic_parity_difference",
...                  "baseline": 0.31, "candidate": 0.04, "candidate_no_worse": True}]}
>>> print(promotion_verdict(job).sentence)
Candidate can be promoted: held-out gates passed (fped[*] 0.400 → 0.100, accuracy 0.900 → 0.890) and on live shadow traffic (demographic_parity_difference 0.040 vs production 0.310 on the same 480 events).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PromotionVerdict", "promotion_verdict", "held_out_summary", "live_summary"]


@dataclass(frozen=True)
class PromotionVerdict:
    promotable: bool | None  # None: held-out gates passed, live traffic not compared yet
    sentence: str


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "undefined"


def held_out_summary(report: dict) -> str:
    decision = report.get("decision") or {}
    gates = decision.get("gates") or {}
    accuracy = f"accuracy {_num((report.get('before') or {}).get('accuracy'))} → {_num((report.get('after') or {}).get('accuracy'))}"
    gate = f"{gates['metric']}[{gates.get('attribute', '*')}]" if gates.get("metric") else "gate gap"
    return (f"{gate} {_num(decision.get('gap_before'))} → "
            f"{_num(decision.get('gap_after'))}, {accuracy}")


def live_summary(shadow: dict) -> str:
    parts = [f"{row['metric']} {_num(row.get('candidate'))} vs production {_num(row.get('baseline'))}"
             for row in shadow.get("metrics") or []]
    return f"{', '.join(parts) or 'no metric'} on the same {shadow.get('events', 0)} events"


def promotion_verdict(job: dict) -> PromotionVerdict:
    report = job.get("report") if isinstance(job.get("report"), dict) else {}
    decision = report.get("decision") if isinstance(report.get("decision"), dict) else None
    if job.get("state") != "succeeded" or decision is None or "promote" not in decision:
        return PromotionVerdict(False, f"No candidate to promote: the job is {job.get('state', 'none')}"
                                       f"{'' if decision is None else ' and its report holds no gate verdict'}.")
    shadow = job.get("shadow")
    if decision["promote"] is not True:
        reasons = "; ".join(map(str, decision.get("reasons") or [])) or "no reason given"
        live = "" if not isinstance(shadow, dict) else (
            f" On live shadow traffic it {'passed' if shadow.get('passed') is True else 'failed'}: {live_summary(shadow)}.")
        return PromotionVerdict(False, f"Candidate cannot be promoted: the held-out gates refused it ({reasons}; "
                                       f"{held_out_summary(report)}).{live}")
    held_out = f"held-out gates passed ({held_out_summary(report)})"
    if not isinstance(shadow, dict):
        return PromotionVerdict(None, f"Candidate not tried on live traffic yet: {held_out}. Next: run the worker "
                                      "with --shadow-candidate DIR --shadow-model MODEL, then "
                                      "`fairwatch incidents shadow ID`.")
    if shadow.get("passed") is not True:
        reasons = "; ".join(map(str, shadow.get("reasons") or [])) or "no reason given"
        return PromotionVerdict(False, f"Candidate cannot be promoted: {held_out}, but on live shadow traffic "
                                       f"{reasons} ({live_summary(shadow)}).")
    return PromotionVerdict(True, f"Candidate can be promoted: {held_out} and on live shadow traffic "
                                  f"({live_summary(shadow)}).")
