"""Evidence for a new incident: what Prometheus holds about the breach when it opens.

Best effort: a query that fails leaves its error in the evidence and the
incident opens regardless.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from fairwatch.alerts.labels import promql_matchers
from fairwatch.monitor import metric_names as names
from fairwatch.monitor.scorer import metric_names as scorer_names


def _prometheus_get(prometheus_url: str, path: str, params: dict) -> list[dict]:
    url = f"{prometheus_url.rstrip('/')}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as response:
        data = json.load(response)["data"]
    return data["result"] if isinstance(data, dict) else data  # query_exemplars answers a bare list


def prometheus_evidence(prometheus_url: str | None, model: str, attribute: str, metric: str, *,
                        range_seconds: float = 3600.0, step_seconds: float = 5.0, now: float | None = None) -> dict:
    """The decisions' bounds and thresholds and the group rates, as Prometheus has them now.

    ``metric`` is the first alert's metric (kept in ``series_range``); the
    queries take every decision metric of (model, attribute).

    ``series`` holds the last ``range_seconds`` of the decision bound, the
    since-start gap with its display bounds, and the threshold (each a list of
    ``{"labels", "points": [[unix seconds, value], ...]}``), so that the
    incident page can plot how the breach built up even after Prometheus
    has dropped the samples.
    """
    if not prometheus_url:
        # Said in the evidence, so that the incident page can tell the on-call why it is empty and what to do.
        return {"not_gathered": "the trigger runs without --prometheus-url"}
    # Every value is escaped, though the trigger only passes identifiers (alerts.labels):
    # a quote in a label must never widen the query to other models.
    selector = promql_matchers({names.MODEL: model, names.ATTRIBUTE: attribute})
    # Every decision metric of the attribute is evidence: later alerts on other
    # metrics join this incident, and the page shows each firing one.
    queries = {
        "bound": f"fairwatch:decision_bound:worst{{{selector}}}",
        "threshold": f"fairwatch:decision_threshold{{{selector}}}",
        "group_rates": f'{names.GROUP_RATE}{{{selector},{names.WINDOW}="all"}}',
        "group_rates_lower": f'{names.GROUP_RATE_LOWER}{{{selector},{names.WINDOW}="all"}}',
        "group_rates_upper": f'{names.GROUP_RATE_UPPER}{{{selector},{names.WINDOW}="all"}}',
        "gaps": f'{names.GAP}{{{selector},{names.WINDOW}="all"}}',
    }
    # Counterfactual evidence is per (model, lexicon attribute), not per
    # protected attribute: take all of the model's.
    counterfactual = promql_matchers({names.MODEL: model})
    queries["counterfactual_flip_rate"] = f"{scorer_names.COUNTERFACTUAL_FLIP_RATE}{{{counterfactual}}}"
    queries["counterfactual_terms"] = f"{scorer_names.COUNTERFACTUAL_TERM_SCORE_CHANGE}{{{counterfactual}}}"
    evidence: dict = {}
    for key, query in queries.items():
        try:
            data = _prometheus_get(prometheus_url, "/api/v1/query", {"query": query})
            evidence[key] = [{"labels": r["metric"], "value": float(r["value"][1])} for r in data]
        except Exception as exc:  # evidence is best effort; the incident opens regardless
            evidence[key] = {"error": f"{type(exc).__name__}: {exc}"}
    end = time.time() if now is None else now
    start = end - range_seconds
    # The series cover every decision metric of the attribute, not only the
    # first alert's: alerts on other metrics join the incident later and the
    # page plots each of them. "and on (...) threshold" keeps the gaps that have
    # a decision (a handful) rather than every gap the monitor exports.
    decided = f" and on ({names.MODEL}, {names.ATTRIBUTE}, {names.METRIC}) fairwatch:decision_threshold{{{selector}}}"
    series_queries = {
        "bound": queries["bound"],
        "gap": f'{names.GAP}{{{selector},{names.WINDOW}="all"}}' + decided,
        "gap_lower": f'{names.GAP_LOWER}{{{selector},{names.WINDOW}="all"}}' + decided,
        "gap_upper": f'{names.GAP_UPPER}{{{selector},{names.WINDOW}="all"}}' + decided,
        "threshold": queries["threshold"],
        # Predictions per group, summed over workers: how many the breach touched.
        "group_predictions": f'sum by ({names.GROUP}) ({names.GROUP_EVENTS}{{{selector},{names.CELL}="predictions"}})',
    }
    series: dict = {}
    for key, query in series_queries.items():
        try:
            data = _prometheus_get(prometheus_url, "/api/v1/query_range",
                                   {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                    "step": f"{step_seconds:g}"})
            series[key] = [{"labels": r["metric"], "points": [[float(t), float(v)] for t, v in r["values"]]}
                           for r in data]
        except Exception as exc:
            series[key] = {"error": f"{type(exc).__name__}: {exc}"}
    evidence["series"] = series
    evidence["series_range"] = {"start": start, "end": end, "step_seconds": step_seconds, "metric": metric}
    evidence["source"] = {"prometheus_url": prometheus_url}
    evidence["exemplars"] = _exemplar_ids(prometheus_url, selector, start, end)
    return evidence


def _exemplar_ids(prometheus_url: str, selector: str, start: float, end: float) -> dict | list:
    """Ids of recent positive predictions per group: the exemplars the monitor attaches
    to its ``positives`` counters (Prometheus keeps them with --enable-feature=exemplar-storage)."""
    query = f'{names.GROUP_EVENTS}{{{selector},{names.CELL}="positives"}}'
    try:
        data = _prometheus_get(prometheus_url, "/api/v1/query_exemplars",
                               {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}"})
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    out = []
    for series in data:
        ids = list(dict.fromkeys(e["labels"].get("event_id") for e in series.get("exemplars", [])
                                 if e["labels"].get("event_id")))
        out.append({"group": series["seriesLabels"].get(names.GROUP), "event_ids": ids[-10:]})
    return out
