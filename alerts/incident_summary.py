"""What an incident says in one sentence per firing metric: which group, how far beyond, since when, how many.

Pure functions over what ``IncidentStore.get`` returns (its alerts and the
evidence the trigger stored). A fact the evidence does not hold is ``None``,
and ``headline`` says so in words rather than guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The per-group rates each gap compares, and whether a higher rate is the harm
# (error rates) or a lower one (missed positives). Selection rate has no side:
# whether a positive prediction helps or hurts depends on the model.
RATES_OF_METRIC = {
    "demographic_parity_difference": ("selection_rate",),
    "demographic_parity_ratio": ("selection_rate",),
    "equalized_odds_difference": ("fpr", "tpr"),
    "equalized_odds_ratio": ("fpr", "tpr"),
    "equal_opportunity_difference": ("tpr",),
    "false_positive_rate_difference": ("fpr",),
    "false_negative_rate_difference": ("fnr",),
    "false_discovery_rate_difference": ("fdr",),
    "accuracy_difference": ("accuracy",),
    "fped": ("fpr",),
    "fned": ("fnr",),
}
HARM_IS_HIGH = {"fpr": True, "fnr": True, "fdr": True, "tpr": False, "accuracy": False, "ppv": False}
RATE_NAMES = {"selection_rate": "selection rate", "fpr": "false positive rate", "fnr": "false negative rate",
              "tpr": "true positive rate", "fdr": "false discovery rate", "accuracy": "accuracy", "ppv": "precision"}


def is_ratio(metric: str) -> bool:
    """Ratios breach below their threshold (0.8 = the 4/5 rule); differences above."""
    return metric.endswith("ratio")


@dataclass(frozen=True)
class GroupContrast:
    rate: str
    worst_group: str
    worst_value: float
    other_group: str
    other_value: float
    harmed: bool  # False when the rate has no harmful side (selection rate)


@dataclass(frozen=True)
class MetricFacts:
    metric: str
    bound: float | None
    threshold: float | None
    since: float | None  # unix seconds: the bound first beyond the threshold, else the alert's start
    since_source: str  # "bound" | "alert" | ""
    contrast: GroupContrast | None
    affected_predictions: float | None  # predictions of the worst group since ``since``

    @property
    def excess(self) -> float | None:
        if self.bound is None or self.threshold is None:
            return None
        return self.threshold - self.bound if is_ratio(self.metric) else self.bound - self.threshold


def firing_metrics(incident: dict) -> list[str]:
    """Every metric a firing alert of the incident named, in the order they arrived."""
    seen: dict[str, None] = {}
    for alert in incident.get("alerts", []):
        metric = (alert.get("labels") or {}).get("metric")
        if metric and alert.get("status", "firing") == "firing":
            seen.setdefault(str(metric), None)
    return list(seen)


def _instant(evidence: dict, key: str, metric: str) -> float | None:
    entries = evidence.get(key)
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if (entry.get("labels") or {}).get("metric") == metric and _finite(entry.get("value")):
            return float(entry["value"])
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def raw_series_points(evidence: dict, key: str, metric: str | None = None, **labels: str) -> list:
    """Points, as stored, of the evidence series ``key`` whose labels match ``metric`` (and ``labels``)."""
    entries = ((evidence.get("series") or {}).get(key))
    if not isinstance(entries, list):
        return []
    for entry in entries:
        have = entry.get("labels") or {}
        if metric is not None and have.get("metric", metric) != metric:
            continue
        if all(have.get(k) == v for k, v in labels.items()):
            return [p for p in entry.get("points", []) if isinstance(p, (list, tuple)) and len(p) == 2]
    return []


def series_points(evidence: dict, key: str, metric: str | None = None, **labels: str) -> list[list[float]]:
    """Finite points of ``raw_series_points``; [] when absent."""
    return [[float(t), float(v)] for t, v in raw_series_points(evidence, key, metric, **labels)
            if _finite(t) and _finite(v)]


def _breach_start(evidence: dict, metric: str) -> float | None:
    """When the bound went beyond the threshold and stayed there, over the stored range."""
    bound = series_points(evidence, "bound", metric)
    threshold = {t: v for t, v in series_points(evidence, "threshold", metric)}
    start = None
    for t, v in bound:
        tau = threshold.get(t)
        if tau is None:
            continue
        beyond = v < tau if is_ratio(metric) else v > tau
        start = (start if start is not None else t) if beyond else None
    return start


def _alert_start(incident: dict, metric: str) -> float | None:
    import datetime

    for alert in incident.get("alerts", []):
        if (alert.get("labels") or {}).get("metric") != metric:
            continue
        try:
            when = datetime.datetime.fromisoformat(str(alert.get("startsAt", "")).replace("Z", "+00:00"))
        except ValueError:
            continue
        if when.tzinfo is not None:
            return when.timestamp()
    return None


def _contrast(evidence: dict, metric: str) -> GroupContrast | None:
    rates = evidence.get("group_rates")
    if not isinstance(rates, list):
        return None
    best: GroupContrast | None = None
    for rate in RATES_OF_METRIC.get(metric, ()):
        values = {str(r["labels"].get("group")): float(r["value"]) for r in rates
                  if (r.get("labels") or {}).get("metric") == rate and _finite(r.get("value"))}
        if len(values) < 2:
            continue
        high = max(values, key=values.get)
        low = min(values, key=values.get)
        worst, other = (high, low) if HARM_IS_HIGH.get(rate, False) else (low, high)
        candidate = GroupContrast(rate, worst, values[worst], other, values[other], rate in HARM_IS_HIGH)
        if best is None or abs(candidate.worst_value - candidate.other_value) > abs(best.worst_value - best.other_value):
            best = candidate
    return best


def _affected(evidence: dict, group: str, since: float | None) -> float | None:
    """Predictions of ``group`` from ``since`` to the end of the stored range (counter difference)."""
    points = series_points(evidence, "group_predictions", None, group=group)
    if not points or since is None:
        return None
    before = [v for t, v in points if t <= since] or [points[0][1]]
    return max(0.0, points[-1][1] - before[-1])


def metric_facts(incident: dict, metric: str) -> MetricFacts:
    evidence = incident.get("evidence") or {}
    since, source = _breach_start(evidence, metric), "bound"
    if since is None:
        since, source = _alert_start(incident, metric), "alert"
    if since is None:
        source = ""
    contrast = _contrast(evidence, metric)
    return MetricFacts(metric, _instant(evidence, "bound", metric), _instant(evidence, "threshold", metric),
                       since, source, contrast,
                       _affected(evidence, contrast.worst_group, since) if contrast else None)


def headline(incident: dict, facts: MetricFacts, when: Any) -> str:
    """One plain sentence; ``when`` formats unix seconds. Unknown parts are said to be unknown."""
    subject = f"{incident.get('model')}: {facts.metric} on {incident.get('attribute')}"
    if facts.excess is not None:
        side = "below" if is_ratio(facts.metric) else "above"
        beyond = (f"is {facts.excess:.3f} beyond its threshold (anytime-valid bound {facts.bound:.3f} "
                  f"{side} threshold {facts.threshold:.3f})")
    else:
        beyond = "is beyond its threshold (bound and threshold unknown: not in the evidence)"
    since = {"bound": f"since {when(facts.since)}",
             "alert": f"since {when(facts.since)} (alert start; the stored bound does not show the crossing)",
             "": "since an unknown time"}[facts.since_source]
    c = facts.contrast
    if c is None:
        group = "harmed group unknown (no group rates in the evidence)"
    else:
        name = RATE_NAMES.get(c.rate, c.rate)
        lead = "harmed group" if c.harmed else f"lowest {name}"
        group = f"{lead}: {c.worst_group} ({name} {c.worst_value:.3f} vs {c.other_value:.3f} for {c.other_group})"
    if facts.affected_predictions is None:
        affected = "predictions affected unknown (no prediction counts in the evidence)"
    else:
        affected = f"about {facts.affected_predictions:,.0f} predictions for {c.worst_group} since then"
    return f"{subject} {beyond} {since}; {group}; {affected}."
