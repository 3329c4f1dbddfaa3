"""Reports of a pipeline's state: a JSON-able dict, and an aligned table for people.

Local reports show every group, flagged when below the minimum size (left
out of alert gaps) or the privacy floor (never exported as a rate).
"""

from __future__ import annotations

import json
import math

import numpy as np
from scipy.stats import norm

from fairwatch.monitor.counts import FN, FP, N, POS, TN, TP
from fairwatch.monitor.gaps import all_gaps
from fairwatch.monitor.generation.generation_gaps import generation_gaps
from fairwatch.monitor.generation.generation_metrics import AttributeStatistics
from fairwatch.monitor.group_metrics import WindowSnapshot
from fairwatch.monitor.metric_names import AUC_METRICS, GAP_METRICS, GENERATION_GAP_METRICS, RATE_METRICS
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.rates import group_rates, wilson_interval
from fairwatch.monitor.score_auc import bias_aucs


def _num(x) -> float | int | None:
    x = float(x)
    return None if math.isnan(x) else x


def eligible_groups(rows: np.ndarray, min_group_size: int) -> np.ndarray:
    return np.flatnonzero(rows[:, N] >= min_group_size)


def attribute_report(rows: np.ndarray, names: list[str], min_group_size: int, privacy_floor: int) -> dict:
    rates = group_rates(rows)
    groups = {}
    for g, name in enumerate(names):
        n = int(rows[g, N])
        if n == 0:
            continue
        entry: dict = {"n": n, "positives": int(rows[g, POS]), "labeled": int(rows[g, [TP, FP, TN, FN]].sum())}
        for metric in RATE_METRICS:
            entry[metric] = _num(rates[metric][0][g])
        entry["ci"] = {
            metric: [_num(rates[metric][1][g]), _num(rates[metric][2][g])]
            for metric in RATE_METRICS
            if not math.isnan(rates[metric][0][g])
        }
        entry["below_min_size"] = n < min_group_size
        entry["below_privacy_floor"] = n < privacy_floor
        groups[name] = entry
    present = np.flatnonzero(rows[:, N] > 0)
    eligible = eligible_groups(rows, min_group_size)
    every_gap = all_gaps(rows, present)
    alert_gaps = all_gaps(rows, eligible)
    return {
        "groups": groups,
        "gaps": {m: _num(every_gap[m].value) for m in GAP_METRICS},
        "gap_intervals": {m: every_gap[m].as_dict(names) for m in GAP_METRICS},
        "alert_groups": [names[g] for g in eligible],
        "alert_gaps": {m: _num(alert_gaps[m].value) for m in GAP_METRICS},
        "alert_gap_intervals": {m: alert_gaps[m].as_dict(names) for m in GAP_METRICS},
    }


def label_free_estimates(pipeline: Pipeline, model: str, coverage_gap: float) -> dict:
    """Per attribute: per-group label delay, calibration error and estimated rates
    of the unlabeled predictions; and whether label coverage differs enough
    across groups to bias the realised rates."""
    metrics = pipeline.models[model]
    calibration = pipeline.calibrations[model]
    since_start = metrics.since_start
    out = {}
    for attribute in metrics.reported:
        names = metrics.index[attribute].values
        rows = since_start.rows(attribute, len(names))
        estimates = calibration.estimates(attribute, len(names))
        errors = calibration.calibration_error(attribute, len(names))
        delays = calibration.label_delay(attribute, len(names))
        reliability = calibration.reliability(attribute, len(names))
        groups = {}
        for g, name in enumerate(names):
            groups[name] = {
                "estimated": estimates[g],
                "estimate_reliability": reliability[g],
                "calibration_error": _num(errors[g]),
                "label_delay_seconds": _num(delays[g]),
            }
        eligible = rows[:, N] >= pipeline.config.min_group_size
        labeled = rows[eligible][:, [TP, FP, TN, FN]].sum(axis=1)
        out[attribute] = {"groups": groups, "label_coverage_gap": coverage_gap_of(labeled, rows[eligible][:, N],
                                                                                  coverage_gap)}
    return out


def score_auc_report(table: np.ndarray, names: list[str]) -> dict:
    """Per group with labeled scores: subgroup, BPSN and BNSP AUC with 95% Hanley-McNeil bounds, the numbers
    of positives and negatives behind each, and the bound on the error the score bins add."""
    estimates = bias_aucs(table)
    own = estimates[AUC_METRICS[0]]
    out = {}
    for g, name in enumerate(names[: table.shape[0]]):
        if own.positives[g] + own.negatives[g] == 0:
            continue
        out[name] = {
            metric: {
                "value": _num(e.value[g]), "ci": [_num(e.lower[g]), _num(e.upper[g])],
                "positives": int(e.positives[g]), "negatives": int(e.negatives[g]),
                "tie_error_bound": _num(e.tie_error_bound[g]),
            }
            for metric, e in estimates.items()
        }
    return out


def generation_attribute_report(stats: AttributeStatistics, names: list[str], min_group_size: int,
                                privacy_floor: int) -> dict:
    """Per group with responses: counts, refusal rate, negative share and mean sentiment with 95% intervals,
    and the W1 distance of its sentiment distribution to the rest's; the gaps over every group with responses,
    and over those with at least ``min_group_size`` (the ones /metrics exports)."""
    responses = stats.responses()
    refusals, _ = stats.refusal.counts()
    negatives, _ = stats.negative.counts()
    toxic, classified = stats.toxic.rows(responses.size).T[[1, 0]]
    rates = stats.rates()
    distance = stats.sentiment_distance()
    groups = {}
    for g, name in enumerate(names[: responses.size]):
        n = int(responses[g])
        if n == 0:
            continue
        entry: dict = {"responses": n, "refusals": int(refusals[g]), "negative": int(negatives[g])}
        if classified[g] > 0:  # a response classifier scored them (--response-model)
            entry.update(classified=int(classified[g]), toxic=int(toxic[g]))
        entry.update({metric: _num(value[g]) for metric, (value, _, _) in rates.items()})
        entry["sentiment_distance"] = _num(distance[g])
        entry["ci"] = {metric: [_num(lower[g]), _num(upper[g])] for metric, (value, lower, upper) in rates.items()
                       if not math.isnan(value[g])}
        entry["below_min_size"] = n < min_group_size
        entry["below_privacy_floor"] = n < privacy_floor
        groups[name] = entry
    every = generation_gaps(stats, np.flatnonzero(responses > 0))
    alert = generation_gaps(stats, np.flatnonzero(responses >= min_group_size))
    return {
        "groups": groups,
        "gaps": {m: every[m].as_dict(names) for m in GENERATION_GAP_METRICS},
        "alert_gaps": {m: alert[m].as_dict(names) for m in GENERATION_GAP_METRICS},
    }


def coverage_gap_of(labeled: np.ndarray, predictions: np.ndarray, threshold: float) -> dict | None:
    """Label coverage spread across groups, flagged only when it is beyond
    ``threshold`` with confidence: the lower Wilson bound of the best-covered
    group minus the upper bound of the worst, at 99% split over the groups
    (a small group's coverage is noisy: 32 rows with half withheld at random
    differ from 0.5 by 0.1 in a third of draws)."""
    if labeled.size < 2:
        return None
    coverage = labeled / predictions
    z = float(norm.ppf(1 - 0.01 / (2 * labeled.size)))
    lower, upper = wilson_interval(np.minimum(labeled, predictions), predictions, z)
    hi, lo = int(np.argmax(coverage)), int(np.argmin(coverage))
    allowance = float(lower[hi] - upper[lo])
    return {"value": float(coverage[hi] - coverage[lo]), "lower": allowance, "imbalanced": allowance > threshold,
            "threshold": threshold}


def window_report(snapshot: WindowSnapshot, min_group_size: int, privacy_floor: int) -> dict:
    return {
        attribute: attribute_report(rows, snapshot.groups[attribute], min_group_size, privacy_floor)
        for attribute, rows in snapshot.rows.items()
    }


def finite(value):
    """``value`` with every NaN or infinite float replaced by None: JSON has no Infinity.

    >>> finite({"a": [1.0, float("inf")], "b": float("nan")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(report: dict, **kwargs) -> str:
    """The report as strict JSON (non-finite numbers as null)."""
    return json.dumps(finite(report), allow_nan=False, **kwargs)


def build_report(pipeline: Pipeline, model: str | None = None) -> dict:
    """The replay report: since-start per attribute, plus each sliding window."""
    stats = pipeline.stats
    config = pipeline.config
    report: dict = {
        "events": stats.valid,
        "invalid": stats.invalid,
        "duplicates": stats.duplicates,
        "invalid_reasons": dict(stats.invalid_reasons),
        "rejection_samples": [
            {"position": position, "reason": r.reason, "message": r.message}
            for position, r in stats.rejection_samples
        ],
        "outcomes": dict(stats.outcomes),
        "pending_outcomes": len(pipeline.early_outcomes),
        "min_group_size": config.min_group_size,
        "privacy_floor": config.privacy_floor,
        "model": None,
        "attributes": {},
        "windows": {},
        "alerts": [],
        "subgroups": [],
        "drift": [event.as_dict() for event in pipeline.drift_events],
    }
    models = {}
    with pipeline.lock:
        snapshots = {name: metrics.snapshot() for name, metrics in pipeline.models.items()}
        extras = {name: label_free_estimates(pipeline, name, config.coverage_gap) for name in pipeline.models}
        auc_tables = {
            name: {a: (pipeline.score_aucs[name].table(a, len(metrics.index[a].values)).copy(), list(metrics.index[a].values))
                   for a in metrics.reported if a in pipeline.score_aucs[name].tables}
            for name, metrics in pipeline.models.items()
        }
        generations = {
            name: (g.snapshot({a: len(pipeline.models[name].index[a].values) for a in pipeline.models[name].reported}),
                   {a: list(pipeline.models[name].index[a].values) for a in pipeline.models[name].reported})
            for name, g in pipeline.generations.items()
        }
        decisions = {
            name: {
                "alerts": [o.as_dict() for o in monitor.onsets] + [
                    o.as_dict() for o in getattr(pipeline.generation_decisions.get(name), "onsets", ())],
                "subgroups": monitor.subgroup_findings(
                    {a: list(i.values) for a, i in pipeline.models[name].index.items()}
                ),
            }
            for name, monitor in pipeline.breach_monitors.items()
        }
    for name, windows in snapshots.items():
        attributes = window_report(windows[0], config.min_group_size, config.privacy_floor)
        for attribute, body in attributes.items():
            extra = extras[name].get(attribute, {})
            for group, entry in body["groups"].items():
                entry.update(extra.get("groups", {}).get(group, {}))
            body["label_coverage_gap"] = extra.get("label_coverage_gap")
            if attribute in auc_tables[name]:
                body["score_auc"] = score_auc_report(*auc_tables[name][attribute])
        models[name] = {
            "attributes": attributes,
            "windows": {
                w.window: window_report(w, config.min_group_size, config.privacy_floor) for w in windows[1:]
            },
            **decisions[name],
        }
        if name in generations:
            by_window, groups_of = generations[name]
            models[name]["generation"] = {
                window: {attribute: generation_attribute_report(stats, groups_of[attribute], config.min_group_size,
                                                                config.privacy_floor)
                         for attribute, stats in by_attribute.items()}
                for window, by_attribute in by_window.items()
            }
    if models:
        chosen = model if model in models else next(iter(models))
        report["model"] = chosen
        report.update(models[chosen])
        if len(models) > 1:
            report["models"] = models
    return report


# -- the table, for people ------------------------------------------------------
TABLE_RATES = ("selection_rate", "tpr", "fpr", "fnr", "ppv", "accuracy", "mean_score")


def _fmt_rate(value, interval) -> str:
    if value is None:
        return "-"
    if interval and interval[0] is not None:
        return f"{value:.3f} [{interval[0]:.2f},{interval[1]:.2f}]"
    return f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def format_table(report: dict) -> str:
    out = [
        f"model {report['model']}: {report['events']} events, {report['invalid']} invalid, "
        f"{report['duplicates']} duplicates; outcomes {report['outcomes'] or '{}'}"
    ]
    for reason, count in sorted(report["invalid_reasons"].items()):
        out.append(f"  invalid ({reason}): {count}")
    for sample in report["rejection_samples"][:5]:
        out.append(f"  e.g. input #{sample['position']}: {sample['message']}")
    generation = report.get("generation", {}).get("all", {})
    for attribute, body in report["attributes"].items():
        if generation and not body["groups"]:
            continue  # a model with generations only: no prediction table to show
        out.append("")
        out.append(f"== {attribute} (since start; 95% Wilson intervals) ==")
        rows = []
        for group, g in sorted(body["groups"].items(), key=lambda kv: -kv[1]["n"]):
            flag = "*" if g["below_privacy_floor"] else ("+" if g["below_min_size"] else "")
            rows.append([group + flag, str(g["n"])] + [_fmt_rate(g[m], g["ci"].get(m)) for m in TABLE_RATES])
        out += _table(["group", "n", *TABLE_RATES], rows)
        out.append(f"   + below the minimum group size ({report['min_group_size']}): left out of alert gaps")
        out.append(f"   * below the privacy floor ({report['privacy_floor']}): never exported")
        gap_rows = []
        for metric in GAP_METRICS:
            every = body["gap_intervals"][metric]
            alert = body["alert_gap_intervals"][metric]

            def cell(gap: dict) -> str:
                if gap["value"] is None:
                    return "-"
                pair = f" ({gap['groups'][0]} vs {gap['groups'][1]})" if "groups" in gap else ""
                return f"{gap['value']:.3f} [{gap['lower']:.3f},{gap['upper']:.3f}]{pair}"

            gap_rows.append([metric, cell(every), cell(alert)])
        out.append("")
        out += _table(["gap", "all groups", f"groups with n >= {report['min_group_size']}"], gap_rows)
    estimated = [
        (attribute, group, g["estimated"], g["label_coverage"])
        for attribute, body in report["attributes"].items()
        for group, g in body["groups"].items()
        if g.get("estimated")
    ]
    if estimated:
        out.append("")
        out.append("== before labels arrive: rates estimated from scores calibrated per group (95% intervals) ==")
        rows = []
        for attribute, group, e, coverage in estimated:
            rows.append([f"{attribute}={group}", f"{coverage:.2f}", str(e["n_unlabeled"])]
                        + [_fmt_rate(e[m], e["ci"].get(m)) for m in ("tpr", "fpr", "fnr", "ppv", "accuracy")])
        out += _table(["group", "labeled", "unlabeled", "tpr", "fpr", "fnr", "ppv", "accuracy"], rows)
    auc_rows = [
        [f"{attribute}={group}", str(m[AUC_METRICS[0]]["positives"]), str(m[AUC_METRICS[0]]["negatives"])]
        + [_fmt_rate(m[metric]["value"], m[metric]["ci"]) for metric in AUC_METRICS]
        for attribute, body in report["attributes"].items()
        for group, m in body.get("score_auc", {}).items()
        if body["groups"].get(group, {}).get("below_privacy_floor") is False
    ]
    if auc_rows:
        out.append("")
        out.append("== score AUCs per group (Borkan et al. 2019; since start; 95% Hanley-McNeil intervals) ==")
        out += _table(["group", "positives", "negatives", *AUC_METRICS], auc_rows)
    for attribute, body in report["attributes"].items():
        for group, g in body["groups"].items():
            check = g.get("estimate_reliability")
            if check and not check["reliable"]:
                out.append(f"  ! {attribute}={group}: recent labels are positive at {check['recent_positive_rate']:.2f} "
                           f"where the calibration expects {check['expected_positive_rate']:.2f} (z {check['z']:.1f}): "
                           "its estimates are not to be trusted (calibration drift)")
        gap = body.get("label_coverage_gap")
        if gap and gap["imbalanced"]:
            out.append(f"  ! {attribute}: label coverage differs by {gap['value']:.2f} across groups: "
                       "realised label-based rates are not comparable")
    for attribute, body in generation.items():
        out.append("")
        out.append(f"== generations by {attribute} (since start; refusal and negative share: 95% Wilson intervals) ==")
        rows = []
        shown = ["refusal_rate", "negative_share", "mean_sentiment"]
        if any(g.get("classified") for g in body["groups"].values()):
            shown.append("toxic_share")
        for group, g in sorted(body["groups"].items(), key=lambda kv: -kv[1]["responses"]):
            flag = "*" if g["below_privacy_floor"] else ("+" if g["below_min_size"] else "")
            rows.append([group + flag, str(g["responses"])] + [_fmt_rate(g[m], g["ci"].get(m)) for m in shown]
                        + [_fmt_rate(g["sentiment_distance"], None)])
        out += _table(["group", "responses", *shown, "w1_to_rest"], rows)
        gap_rows = []
        for metric, gap in body["alert_gaps"].items():
            if gap["value"] is None:
                continue
            pair = f" ({gap['groups'][0]} vs {gap['groups'][1]})" if "groups" in gap else ""
            gap_rows.append([metric, f"{gap['value']:.3f} [{gap['lower']:.3f},{gap['upper']:.3f}]{pair}"])
        if gap_rows:
            out += _table(["gap", f"groups with >= {report['min_group_size']} responses"], gap_rows)
    out.append("")
    if report["alerts"]:
        out.append("== breaches (anytime-valid bounds beyond the threshold) ==")
        for a in report["alerts"]:
            groups = a["groups"] if isinstance(a["groups"], list) else "&".join(f"{k}={v}" for k, v in a["groups"].items())
            out.append(f"  at input #{a['event_index']}: {a['attribute']} {a['metric']} = {a['value']:.3f} "
                       f"[{a['lower']:.3f}, {a['upper']:.3f}] vs threshold {a['threshold']} ({groups})")
    else:
        out.append("== breaches: none (no anytime-valid bound beyond its threshold) ==")
    if report["subgroups"]:
        out.append("")
        out.append("== worst subgroups (vs the rest; bounds corrected for the search) ==")
        rows = []
        for f in report["subgroups"][:10]:
            rows.append(["&".join(f"{k}={v}" for k, v in f["groups"].items()), f["metric"], str(f["n"]),
                         f"{f['value']:.3f}", f"{f['rest']:.3f}", f"{f['difference']:+.3f}",
                         f"[{f['lower']:+.3f},{f['upper']:+.3f}]", "ALERT" if f["alert"] else ""])
        out += _table(["subgroup", "metric", "n", "value", "rest", "difference", "bounds", ""], rows)
    if report["drift"]:
        out.append("")
        out.append("== drift detected ==")
        for d in report["drift"]:
            where = f"{d['attribute']}={d['group']}" if d["group"] else d["attribute"]
            out.append(
                f"  at input #{d['event_index']}: {where} {d['metric']} {d['before']:.3f} -> {d['after']:.3f}"
            )
    return "\n".join(out)


__all__ = ["build_report", "format_table", "to_json"]
