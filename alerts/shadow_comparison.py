"""The candidate against production on the same live events: read the shadow's gaps, compare, give a verdict.

A worker started with ``--shadow-candidate DIR --shadow-model M`` tracks
``M:candidate`` (the candidate's decisions) and ``M:baseline`` (production's
own decisions on exactly those events). This module reads both sides' gaps
for the incident's attribute, from Prometheus (summed over workers, the
production path) or from a ``fairwatch replay --report json`` file (a window
replayed offline), and says whether the candidate is at least as fair as
production on every metric the incident fired on, with enough events to say so.

The gaps are the since-start gaps among groups at or above the minimum size
(``fairwatch_gap{window="all"}``, the report's ``alert_gaps``): the derived
models start when the candidate is attached, so "since start" is "since the
candidate has been scoring".

>>> side = lambda gap, n: ShadowSide({"demographic_parity_difference": gap}, {"a": n, "b": n})
>>> verdict = compare_shadow(side(0.30, 120), side(0.05, 120), ["demographic_parity_difference"], min_events=100)
>>> verdict["passed"], verdict["metrics"][0]["candidate"], verdict["events"]
(True, 0.05, 240)
>>> compare_shadow(side(0.05, 120), side(0.30, 120), ["demographic_parity_difference"], 100)["reasons"]
['demographic_parity_difference: candidate 0.300 is worse than production 0.050 on the same 240 live events']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairwatch.alerts.incident_summary import is_ratio
from fairwatch.alerts.labels import promql_matchers
from fairwatch.monitor import metric_names as names
from fairwatch.monitor.scorer.shadow import shadow_models
from fairwatch.monitor.errors import FairwatchError, first_line

__all__ = ["ShadowSide", "ShadowEvidenceError", "compare_shadow", "shadow_from_prometheus", "shadow_from_report",
           "DEFAULT_MIN_EVENTS"]

# Fewer shadowed events than this and the live verdict is "not enough evidence" (a refusal, not a pass):
# a few dozen events can show any gap by chance.
DEFAULT_MIN_EVENTS = 200


class ShadowEvidenceError(FairwatchError, ValueError):
    """The shadow's numbers cannot be read (no such model, unreadable source), worded for one line."""


@dataclass(frozen=True)
class ShadowSide:
    """One side of the shadow (baseline or candidate) for one attribute: gaps by metric, predictions by group."""

    gaps: dict[str, float | None]
    predictions: dict[str, int]

    @property
    def events(self) -> int:
        return sum(self.predictions.values())


def _distance(metric: str, gap: float) -> float:
    """How far a gap is from no gap: 1 - ratio for ratios, |difference| otherwise."""
    return 1.0 - gap if is_ratio(metric) else abs(gap)


def compare_shadow(baseline: ShadowSide, candidate: ShadowSide, metrics: list[str], min_events: int) -> dict:
    """The verdict: passed when the candidate's gap is no worse than production's on every metric, with enough events."""
    reasons: list[str] = []
    rows = []
    n = candidate.events
    for metric in metrics:
        before, after = baseline.gaps.get(metric), candidate.gaps.get(metric)
        defined = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (before, after))
        worse = defined and _distance(metric, after) > _distance(metric, before) + 1e-12
        rows.append({"metric": metric, "baseline": before, "candidate": after,
                     "candidate_no_worse": None if not defined else not worse})
        if not defined:
            reasons.append(f"{metric}: undefined on the live events (too few events per group, or no labels yet)")
        elif worse:
            reasons.append(f"{metric}: candidate {after:.3f} is worse than production {before:.3f} "
                           f"on the same {n} live events")
    if n < min_events:
        reasons.insert(0, f"only {n} live events shadowed, fewer than {min_events}")
    return {"passed": not reasons and bool(metrics), "reasons": reasons or ([] if metrics else ["no metric to compare"]),
            "metrics": rows, "events": n, "min_events": min_events,
            "predictions": {"baseline": baseline.predictions, "candidate": candidate.predictions}}


# -- sources ---------------------------------------------------------------------------
def shadow_from_report(path: str | Path, model: str, attribute: str) -> tuple[ShadowSide, ShadowSide, dict]:
    """(baseline, candidate, the report's ``shadow`` section) from a ``fairwatch replay --report json`` file."""
    import json

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ShadowEvidenceError(f"cannot read --report {path}: {exc.strerror}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        raise ShadowEvidenceError(f"--report {path} is not JSON (write it with `fairwatch replay --report json`)") from None
    try:
        return _sides_of(report, path, model, attribute)
    except ShadowEvidenceError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # JSON, but not shaped as replay writes it
        raise ShadowEvidenceError(f"--report {path} is not a `fairwatch replay --report json` report "
                                  f"({type(exc).__name__}: {first_line(exc, 120)})") from None


def _sides_of(report: dict, path: str | Path, model: str, attribute: str) -> tuple[ShadowSide, ShadowSide, dict]:
    models = report.get("models") if isinstance(report, dict) else None
    sides = []
    for name in shadow_models(model):
        body = ((models or {}).get(name) or {}).get("attributes", {}).get(attribute)
        if body is None:
            shadowed = (report.get("shadow") or {}).get("model") if isinstance(report, dict) else None
            raise ShadowEvidenceError(
                f"{path} has no {name} for attribute {attribute!r}"
                + (f" (its shadow is of model {shadowed!r})" if shadowed and shadowed != model else
                   f": replay with --shadow-candidate DIR --shadow-model {model}"))
        gaps = dict(body.get("alert_gaps") or {})
        for metric, value in gaps.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{name}: gap {metric} is {value!r}, not a number")
        sides.append(ShadowSide(gaps, {g: int(e["n"]) for g, e in (body.get("groups") or {}).items()}))
    return sides[0], sides[1], report.get("shadow") or {}


def shadow_from_prometheus(prometheus_url: str, model: str, attribute: str) -> tuple[ShadowSide, ShadowSide, dict]:
    """(baseline, candidate, {}) as Prometheus has them now, the counters summed over every worker."""
    from fairwatch.alerts.evidence import _prometheus_get

    sides = []
    for name in shadow_models(model):
        selector = promql_matchers({names.MODEL: name, names.ATTRIBUTE: attribute})
        try:
            # With several workers, each exports its own gap; the worst one is the one to judge by.
            gaps = _prometheus_get(prometheus_url, "/api/v1/query", {
                "query": f'max by ({names.METRIC}) ({names.GAP}{{{selector},{names.WINDOW}="all"}})'})
            counts = _prometheus_get(prometheus_url, "/api/v1/query", {
                "query": f'sum by ({names.GROUP}) ({names.GROUP_EVENTS}{{{selector},{names.CELL}="predictions"}})'})
        except Exception as exc:  # noqa: BLE001 - any failure to reach or read Prometheus is one line for the CLI
            raise ShadowEvidenceError(f"cannot query Prometheus at {prometheus_url}: {type(exc).__name__}: {exc}") from None
        if not counts:
            raise ShadowEvidenceError(
                f"Prometheus has no predictions of {name} for attribute {attribute!r}: start the worker with "
                f"--shadow-candidate DIR --shadow-model {model}, and let it score some traffic")
        sides.append(ShadowSide(
            {r["metric"].get(names.METRIC): _value(r["value"][1]) for r in gaps},
            {r["metric"].get(names.GROUP, ""): int(float(r["value"][1])) for r in counts}))
    return sides[0], sides[1], {}


def _value(text: Any) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None
