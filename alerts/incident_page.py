"""One self-contained HTML page per incident, for the on-call engineer.

``render_incident_html(incident)`` takes what ``IncidentStore.get`` returns
and draws, as inline SVG: the gap over time with its display bounds, the
decision's anytime-valid bound and the threshold (from the evidence the
trigger stored when the incident opened); the per-group rates with their
intervals; the fine-tune's before/after gaps and per-group error rates (from
the job's report); then the alerts, the timeline and the job as tables.

No network and no scripts: the page must open from a ticket attachment or
an air-gapped laptop. The charts are our own ~100 lines of SVG rather than
matplotlib (not a dependency of fairwatch, and its SVG would need fonts
embedded) or a JS charting library (external or large). Every value that
comes from the incident is passed through ``html.escape``.
"""

from __future__ import annotations

import html
import json
import math
import time
import urllib.parse
from typing import Any

from fairwatch.alerts.incident_summary import firing_metrics, metric_facts, raw_series_points
from fairwatch.alerts.incident_summary import headline as headline_sentence
from fairwatch.alerts.promotion import promotion_verdict
from fairwatch.alerts.rules import AlertSettings

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
THRESHOLD_COLOR = "#d62728"
GAP_COLOR = "#1f77b4"
BAND_COLOR = "#aec7e8"
BOUND_COLOR = "#ff7f0e"
BEFORE_COLOR = "#7f7f7f"
AFTER_COLOR = "#2ca02c"
REPORT_GAPS = ("fped", "fned", "equalized_odds_difference", "false_positive_rate_difference",
               "false_negative_rate_difference", "demographic_parity_difference")
RATE_ORDER = ("selection_rate", "tpr", "fpr", "fnr", "ppv", "accuracy")
SERIES_KEYS = ("gap", "bound", "threshold", "gap_lower", "gap_upper", "group_predictions")

e = html.escape


# Timestamps a page can show: 1970 to the end of year 9999. Evidence comes from
# Prometheus and alerts from anyone who can reach Alertmanager; a time outside
# this range is not a time (gmtime overflows on 1e20).
LAST_VALID_SECONDS = 253402300799.0


def _valid_time(seconds: Any) -> bool:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return False
    return math.isfinite(value) and 0.0 <= value <= LAST_VALID_SECONDS


def _utc(seconds: float | None, fmt: str = "%Y-%m-%d %H:%M:%SZ") -> str:
    if seconds is None:
        return "-"
    if not _valid_time(seconds):
        return "invalid time"
    return time.strftime(fmt, time.gmtime(float(seconds)))


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "-"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    span = high - low or 1.0
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step) + 1)]


def _no_data(plot_id: str, title: str, why: str, width: int = 1000, height: int = 120) -> str:
    return (f'<svg id="{e(plot_id)}" class="plot" width="{width}" height="{height}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{e(title)}</title>'
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fafafa" stroke="#ccc"/>'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#666">{e(why)}</text></svg>')


def line_chart(plot_id: str, title: str, lines: list[dict], band: dict | None = None,
               width: int = 1000, height: int = 320) -> str:
    """Lines over time: each ``{"name", "points": [[t, v], ...], "color", "dash"}``; ``band`` has lower/upper."""
    lines = [line for line in lines if line["points"]]
    if not lines:
        return _no_data(plot_id, title, "no time series in the evidence")
    everything = [p for line in lines for p in line["points"]]
    if band:
        everything += band["lower"] + band["upper"]
    times = [p[0] for p in everything]
    values = [p[1] for p in everything if math.isfinite(p[1])] or [0.0]
    t0, t1 = min(times), max(times)
    if t1 - t0 < 1:
        t0, t1 = t0 - 30, t1 + 30
    v0, v1 = min(0.0, min(values)), max(values)
    v1 = v1 + 0.1 * ((v1 - v0) or 1.0)
    left, right, top, bottom = 60, 20, 30, 60
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + (1 - (v - v0) / (v1 - v0)) * plot_h

    parts = [f'<svg id="{e(plot_id)}" class="plot" width="{width}" height="{height}" role="img" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{e(title)}</title>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>']
    for tick in _ticks(v0, v1):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>')
    for i in range(5):
        t = t0 + i * (t1 - t0) / 4
        parts.append(f'<text x="{x(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">'
                     f'{e(_utc(t, "%H:%M:%S"))}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 28}" text-anchor="middle" font-size="11">'
                 f'time (UTC, {e(_utc(t0, "%Y-%m-%d"))})</text>')
    if band and band["lower"] and band["upper"]:
        outline = [(x(t), y(v)) for t, v in band["upper"]] + [(x(t), y(v)) for t, v in reversed(band["lower"])]
        parts.append(f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in outline)}" '
                     f'fill="{band["color"]}" fill-opacity="0.6" stroke="none"/>')
    for line in lines:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line["points"] if math.isfinite(v))
        dash = ' stroke-dasharray="8 4"' if line.get("dash") else ""
        parts.append(f'<polyline points="{points}" fill="none" stroke="{line["color"]}" stroke-width="3"{dash}/>')
        if len(line["points"]) == 1:  # a single sample is a dot, not an invisible line
            t, v = line["points"][0]
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="4" fill="{line["color"]}"/>')
    legend = [(line["name"], line["color"]) for line in lines] + ([(band["name"], band["color"])] if band else [])
    parts.append(_legend(legend, left, height - 10))
    parts.append("</svg>")
    return "".join(parts)


def _legend(entries: list[tuple[str, str]], x0: float, y0: float) -> str:
    parts, x = [], x0
    for name, color in entries:
        parts.append(f'<rect x="{x}" y="{y0 - 10}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{x + 16}" y="{y0}" font-size="12">{e(name)}</text>')
        x += 24 + 7 * len(name)
    return "".join(parts)


def bar_chart(plot_id: str, title: str, categories: list[str], series: list[dict],
              width: int = 1000, height: int = 300, y_max: float | None = None) -> str:
    """Grouped bars with interval whiskers: ``series`` = ``{"name", "color", "values": [(v, lo, hi) | None]}``."""
    present = [v for s in series for v in s["values"] if v is not None and v[0] is not None]
    if not categories or not present:
        return _no_data(plot_id, title, "no values in the evidence")
    top_value = max(max((hi if hi is not None else v) for v, _, hi in present), 1e-9)
    y_max = y_max if y_max is not None else top_value * 1.1
    left, right, top, bottom = 60, 20, 30, 70
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(v: float) -> float:
        return top + (1 - min(max(v, 0.0), y_max) / y_max) * plot_h

    parts = [f'<svg id="{e(plot_id)}" class="plot" width="{width}" height="{height}" role="img" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{e(title)}</title>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>']
    for tick in _ticks(0.0, y_max):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>')
    slot = plot_w / len(categories)
    bar_w = slot * 0.8 / max(1, len(series))
    for c, category in enumerate(categories):
        parts.append(f'<text x="{left + (c + 0.5) * slot:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                     f'font-size="11">{e(category)}</text>')
        for s_index, s in enumerate(series):
            value = s["values"][c]
            if value is None or value[0] is None:
                continue
            v, lo, hi = value
            bx = left + c * slot + slot * 0.1 + s_index * bar_w
            parts.append(f'<rect x="{bx:.1f}" y="{y(v):.1f}" width="{bar_w * 0.9:.1f}" '
                         f'height="{max(0.0, top + plot_h - y(v)):.1f}" fill="{s["color"]}">'
                         f'<title>{e(s["name"])} {e(category)}: {_num(v)} [{_num(lo)}, {_num(hi)}]</title></rect>')
            if lo is not None and hi is not None:
                cx = bx + bar_w * 0.45
                parts.append(f'<path d="M{cx:.1f},{y(lo):.1f} V{y(hi):.1f} M{cx - 4:.1f},{y(lo):.1f} h8 '
                             f'M{cx - 4:.1f},{y(hi):.1f} h8" stroke="#222" stroke-width="1.5" fill="none"/>')
    parts.append(_legend([(s["name"], s["color"]) for s in series], left, height - 14))
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- the incident's pieces


def evidence_gap_reason(incident: dict, key: str) -> str | None:
    """Why the evidence under ``key`` (or ``series``) is missing, with the next step; None when it is there."""
    evidence = incident.get("evidence") or {}
    dashboard = "open the model dashboard (link above) for the live series"
    if not evidence:
        return ("No evidence was stored with this incident (it was opened before evidence was gathered, "
                f"or by hand). Next: {dashboard}.")
    if "not_gathered" in evidence:
        return (f"No evidence: {evidence['not_gathered']}. Next: restart `fairwatch trigger serve` with "
                f"--prometheus-url http://PROMETHEUS:9090 so that new incidents carry it; now, {dashboard}.")
    value = (evidence.get("series") or {}).get(key) if key in SERIES_KEYS else evidence.get(key)
    if isinstance(value, dict) and "error" in value:
        where = (evidence.get("source") or {}).get("prometheus_url", "Prometheus")
        return (f"Prometheus at {where} did not answer when the incident opened ({value['error']}). "
                f"Next: check that Prometheus is up and reachable from the trigger; now, {dashboard}.")
    if not value:
        return ("Prometheus answered but held no series for this model and attribute. Next: check that "
                "Prometheus scrapes the monitor (`up` of its job), loads alerts/rules (the decision_* "
                f"recording rules) and that the model and attribute labels match; now, {dashboard}.")
    return None


def gap_plot(incident: dict, metric: str, index: int) -> str:
    """The gap of one firing metric over time, with its band, its decision bound and its threshold.

    One chart per metric, so that a ratio (threshold 0.8) and a difference
    (threshold 0.1) never share an axis.
    """
    evidence = incident.get("evidence") or {}
    plot_id = f"plot-gap-{index}"

    def points(key: str) -> list[list[float]]:
        return [[float(t), float(v)] for t, v in raw_series_points(evidence, key, metric)
                if _valid_time(t) and isinstance(v, (int, float)) and math.isfinite(v)]

    lines = [
        {"name": f"{metric} (since start)", "points": points("gap"), "color": GAP_COLOR},
        {"name": "decision bound (anytime-valid)", "points": points("bound"), "color": BOUND_COLOR, "dash": True},
        {"name": "threshold", "points": points("threshold"), "color": THRESHOLD_COLOR},
    ]
    if not any(line["points"] for line in lines):
        reason = evidence_gap_reason(incident, "gap") or evidence_gap_reason(incident, "bound") or (
            f"The stored series hold no samples of {metric} (the alert may have named a metric the "
            "monitor does not decide on). Next: open the model dashboard (link above).")
        return (_no_data(plot_id, f"{metric} over time", f"no series of {metric} stored")
                + f'<p class="missing">{e(reason)}</p>')
    lower, upper = points("gap_lower"), points("gap_upper")
    band = {"name": "95% interval (display)", "lower": lower, "upper": upper, "color": BAND_COLOR} \
        if lower and upper else None
    chart = line_chart(plot_id, f"{metric} over time", lines, band)
    skipped = sum(1 for key in ("gap", "bound", "threshold", "gap_lower", "gap_upper")
                  for t, _ in raw_series_points(evidence, key, metric) if not _valid_time(t))
    if skipped:
        chart += (f'<p class="note">{skipped} evidence sample(s) with a timestamp outside 1970-9999 '
                  "were left out of this plot.</p>")
    return chart


def rates_plot(incident: dict) -> str:
    evidence = incident.get("evidence") or {}
    rates = evidence.get("group_rates")
    reason = evidence_gap_reason(incident, "group_rates")
    if reason or not isinstance(rates, list):
        return (_no_data("plot-rates", "per-group rates", "no group rates stored")
                + f'<p class="missing">{e(reason or "The group rates are not in the evidence.")}</p>')

    def keyed(entries: Any) -> dict:
        if not isinstance(entries, list):
            return {}
        return {(r["labels"].get("group", ""), r["labels"].get("metric", "")): r["value"] for r in entries}

    values, lower, upper = keyed(rates), keyed(evidence.get("group_rates_lower")), keyed(evidence.get("group_rates_upper"))
    groups = sorted({g for g, _ in values})
    found = {m for _, m in values}
    metrics = [m for m in RATE_ORDER if m in found] + sorted(found - set(RATE_ORDER))
    series = [{"name": g, "color": PALETTE[i % len(PALETTE)],
               "values": [(values[(g, m)], lower.get((g, m)), upper.get((g, m))) if (g, m) in values else None
                          for m in metrics]}
              for i, g in enumerate(groups)]
    return bar_chart("plot-rates", "per-group rates since start", metrics, series, y_max=1.0)


def _report_attribute(report: dict, attribute: str) -> str | None:
    attributes = (report.get("before") or {}).get("attributes") or {}
    if attribute in attributes:
        return attribute
    gate = (report.get("config") or {}).get("gate_attribute")
    if gate in attributes:
        return gate
    return next(iter(attributes), None)


def finetune_plots(incident: dict) -> str:
    report = (incident.get("job") or {}).get("report")
    if not isinstance(report, dict) or "before" not in report or "after" not in report:
        return _no_data("plot-finetune", "before/after the fine-tune", "no fine-tune report yet")
    attribute = _report_attribute(report, incident.get("attribute", ""))
    if attribute is None:
        return _no_data("plot-finetune", "before/after the fine-tune", "the report holds no attribute")

    def gap(side: str, name: str) -> tuple | None:
        entry = report[side]["attributes"].get(attribute, {}).get("gaps", {}).get(name)
        return None if not entry else (entry.get("value"), entry.get("lower"), entry.get("upper"))

    names = [n for n in REPORT_GAPS if gap("before", n) is not None]
    gaps = bar_chart("plot-finetune", f"gaps on held-out data, {attribute}", names,
                     [{"name": "before", "color": BEFORE_COLOR, "values": [gap("before", n) for n in names]},
                      {"name": "after (candidate)", "color": AFTER_COLOR, "values": [gap("after", n) for n in names]}])
    groups = sorted(report["before"]["attributes"][attribute].get("groups", {}))

    def rate(side: str, group: str, metric: str) -> tuple | None:
        entry = report[side]["attributes"][attribute].get("groups", {}).get(group, {}).get(metric)
        return None if not entry else (entry.get("value"), entry.get("lower"), entry.get("upper"))

    categories = [f"{g} {m}" for g in groups for m in ("fpr", "fnr")]
    per_group = bar_chart("plot-finetune-groups", f"per-group error rates on held-out data, {attribute}", categories,
                          [{"name": "before", "color": BEFORE_COLOR,
                            "values": [rate("before", g, m) for g in groups for m in ("fpr", "fnr")]},
                           {"name": "after (candidate)", "color": AFTER_COLOR,
                            "values": [rate("after", g, m) for g in groups for m in ("fpr", "fnr")]}], y_max=1.0)
    return gaps + per_group


def _table(header: list[str], rows: list[list[Any]], raw_html_columns: tuple[int, ...] = ()) -> str:
    """A table; cells in ``raw_html_columns`` are HTML this module built (their values escaped already)."""
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if i in raw_html_columns else e(str(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plain(value: Any, limit: int = 120) -> str:
    """A value as short readable text: scalars as they are, lists joined, dicts as key: value pairs."""
    if isinstance(value, dict):
        text = "; ".join(f"{k}: {_plain(v, 60)}" for k, v in value.items()
                         if not isinstance(v, (dict, list)) or len(json.dumps(v, default=str)) <= 60)
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_plain(v, 40) for v in value)
    elif isinstance(value, float):
        text = _num(value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _badge(text: str, kind: str) -> str:
    """kind: good (green), bad (red), warn (amber), neutral (grey), busy (blue)."""
    return f'<span class="badge {kind}">{e(text)}</span>'


JOB_BADGE = {"succeeded": "good", "failed": "bad", "running": "busy", "queued": "busy",
             "awaiting_approval": "warn", "skipped": "neutral", "none": "neutral"}


def job_badge(job: dict) -> str:
    state = str(job.get("state", "none"))
    return _badge(f"job {state}", JOB_BADGE.get(state, "neutral"))


def gates_badge(job: dict) -> str:
    """The gates' verdict on the candidate, apart from the job's own success: a refused
    promotion is the gates doing their work, not a failed job."""
    report = job.get("report") if isinstance(job.get("report"), dict) else None
    decision = (report or {}).get("decision")
    if not isinstance(decision, dict) or "promote" not in decision:
        return _badge("promotion: no verdict yet", "neutral")
    if decision["promote"] is True:
        return _badge("promotion: the gates recommend the candidate", "good")
    return _badge("promotion refused by the gates", "warn")


# A refused candidate is amber, never red: the gates doing their work is not a failure.
PROMOTION_BADGE = {True: ("promotable: held-out and live shadow gates pass", "good"),
                   False: ("not promotable", "warn"),
                   None: ("held-out gates pass; not tried on live traffic", "warn")}


def promotion_badge(job: dict) -> str:
    """Both gates in one badge: green only when the held-out split and the live shadow agree."""
    report = job.get("report") if isinstance(job.get("report"), dict) else {}
    if job.get("state") != "succeeded" or not isinstance(report.get("decision"), dict):
        return _badge("promotion: no verdict yet", "neutral")
    return _badge(*PROMOTION_BADGE[promotion_verdict(job).promotable])


def promotion_section(job: dict) -> str:
    """The verdict in words, then production and candidate side by side on the same live events."""
    verdict = promotion_verdict(job)
    out = f'<p class="verdict">{promotion_badge(job)} {e(verdict.sentence)}</p>'
    shadow = job.get("shadow")
    if not isinstance(shadow, dict):
        return out
    rows = [[r["metric"], _num(r.get("baseline")), _num(r.get("candidate")),
             {True: "yes", False: "no (worse)", None: "undefined"}[r.get("candidate_no_worse")]]
            for r in shadow.get("metrics") or []]
    predictions = shadow.get("predictions") or {}
    groups = sorted(set(predictions.get("baseline") or {}) | set(predictions.get("candidate") or {}))
    counts = [[g, str((predictions.get("baseline") or {}).get(g, 0)), str((predictions.get("candidate") or {}).get(g, 0))]
              for g in groups]
    return (out + f'<p>Live shadow of {e(str(shadow.get("candidate_dir", "the candidate")))} on attribute '
            f'{e(str(shadow.get("attribute")))}, compared {e(_utc(shadow.get("compared_at")))} from '
            f'{e(str(shadow.get("source")))}: {shadow.get("events", 0)} events '
            f'(at least {shadow.get("min_events", "?")} needed).</p>'
            + _table(["metric (since the candidate was attached)", "production on the same events", "candidate",
                      "candidate no worse"], rows)
            + _table(["group", "production predictions", "candidate predictions"], counts))


def job_section(job: dict) -> str:
    report = job.get("report") if isinstance(job.get("report"), dict) else None
    rows = [["state", job_badge(job)], ["command", e(" ".join(map(str, job.get("command", []))) or "-")],
            ["report", e(str(job.get("report_path", "-")))], ["candidate", e(str(job.get("candidate_dir", "-")))]]
    if report:
        decision = report.get("decision") or {}
        before, after = report.get("before") or {}, report.get("after") or {}
        training = {k: v for k, v in (report.get("training") or {}).items() if k != "history"}
        rows += [
            ["gates", gates_badge(job)],
            ["reasons", e("; ".join(map(str, decision.get("reasons") or [])) or "all gates pass")],
            ["gate gap before → after", e(f"{_num(decision.get('gap_before'))} → {_num(decision.get('gap_after'))}")],
            ["accuracy before → after", e(f"{_num(before.get('accuracy'))} → {_num(after.get('accuracy'))}")],
            ["AUC before → after", e(f"{_num(before.get('auc'))} → {_num(after.get('auc'))}")],
            ["data", e(_plain(report.get("data", {}), 300))],
            ["training", e(_plain(training, 300))],
        ]
    return _table(["job", "value"], rows, raw_html_columns=(1,))


def _interval(entry: Any) -> str:
    if isinstance(entry, dict):
        return f"{_num(entry.get('value'))} [{_num(entry.get('lower'))}, {_num(entry.get('upper'))}]"
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        return f"[{_num(entry[0])}, {_num(entry[1])}]"
    return "-"


def ablation_section(report: Any) -> str:
    """Plain fine-tuning beside the full recipe (``fairwatch finetune --ablation``), when the report has it."""
    ablation = report.get("ablation") if isinstance(report, dict) else None
    if not isinstance(ablation, dict):
        return ""
    rows = []
    for name, label in (("before", "serving model"), ("plain", "plain fine-tuning"), ("full", "full recipe")):
        v = ablation.get(name) or {}
        gaps = v.get("gaps") or {}
        rows.append([label, f"{_num(v.get('accuracy'))} {_interval(v.get('accuracy_interval'))}",
                     _num(v.get("gate_gap")), _interval(gaps.get("fped")),
                     _interval(gaps.get("equalized_odds_difference")),
                     "-" if name == "before" else ("yes" if v.get("promote") else "no")])
    return (f"<h3>Ablation on held-out data ({e(str(ablation.get('attribute')))})</h3>"
            + _table(["variant", "accuracy [95%]", "gate gap", "FPED [95%]", "equalized odds diff. [95%]",
                      "gates pass"], rows))


def exemplar_section(incident: dict) -> str:
    """The event ids of recent positive predictions per group, to look up in the model's own logs."""
    exemplars = (incident.get("evidence") or {}).get("exemplars")
    if isinstance(exemplars, list) and any(x.get("event_ids") for x in exemplars if isinstance(x, dict)):
        rows = [[x.get("group", "?"), ", ".join(map(str, x.get("event_ids") or [])) or "-"]
                for x in exemplars if isinstance(x, dict)]
        return ("<p>Recent positive predictions of each group (OpenMetrics exemplars): look these ids up "
                "in the model's prediction log.</p>" + _table(["group", "event ids"], rows))
    reason = evidence_gap_reason(incident, "exemplars")
    if reason is None:
        reason = ("Prometheus kept no exemplars for these series. Next: run Prometheus with "
                  "--enable-feature=exemplar-storage and the monitor with exemplars on (the default).")
    return f'<p class="missing">{e(reason)}</p>'


def incident_links(incident: dict, runbook_url: str | None = None, dashboard_url: str | None = None) -> dict:
    """Runbook and dashboard links: the caller's base URLs, else those the trigger stored, else the
    alert's own annotations, else the defaults of ``alerts.rules`` (docs/runbook.md, model dashboard)."""
    stored = (incident.get("evidence") or {}).get("links") or {}
    annotations = next((a.get("annotations") or {} for a in incident.get("alerts", [])
                        if (a.get("labels") or {}).get("alertname") == "FairnessGapBreach"), {})
    defaults = AlertSettings()
    query = urllib.parse.urlencode({"var-model": incident.get("model", ""),
                                    "var-attribute": incident.get("attribute", "")})
    runbook_base = runbook_url or stored.get("runbook_url")
    dashboard_base = dashboard_url or stored.get("dashboard_url")
    return {
        "runbook": f"{runbook_base}#runbook-fairnessgapbreach" if runbook_base else
        annotations.get("runbook_url") or f"{defaults.runbook_url}#runbook-fairnessgapbreach",
        "dashboard": f"{dashboard_base}?{query}" if dashboard_base else
        annotations.get("dashboard_url") or f"{defaults.dashboard_url}?{query}",
    }


def _safe_href(url: str) -> str:
    """Only http(s) links: a javascript: URL in an annotation must not become a link."""
    return url if urllib.parse.urlsplit(url).scheme in ("http", "https") else "#"


def timeline_rows(incident: dict) -> list[list[str]]:
    rows = []
    for entry in incident.get("timeline", []):
        detail = entry.get("detail") or {}
        if isinstance(detail, dict) and isinstance(detail.get("alert"), dict):
            detail = {**detail, "alert": (detail["alert"].get("labels") or {}).get("metric", "alert")}
        if isinstance(detail, dict) and "labels" in detail:  # an alert record itself
            detail = {"status": detail.get("status"), "metric": (detail.get("labels") or {}).get("metric")}
        rows.append([_utc(entry.get("at")), entry.get("change", ""), _plain(detail, 200)])
    return rows


STYLE = """
body { font-family: sans-serif; margin: 20px; color: #222; background: #fff; max-width: 1100px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
h3 { font-size: 14px; margin: 16px 0 0; }
.headline { font-size: 17px; line-height: 1.4; background: #fff4e5; border-left: 6px solid #a50021;
padding: 10px 14px; margin: 10px 0; }
.headline.more { font-size: 14px; border-left-color: #ff7f0e; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; } td, th { border: 1px solid #ddd;
padding: 4px 8px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f4f4f4; white-space: nowrap; word-break: keep-all; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: bold; font-size: 13px; }
.badge.good { background: #d8f3dc; color: #1b5e20; } .badge.bad { background: #fde2e2; color: #b71c1c; }
.badge.warn { background: #fff3cd; color: #7a4f00; } .badge.busy { background: #e3f2fd; color: #0d47a1; }
.badge.neutral { background: #eee; color: #444; }
.links a { margin-right: 18px; } .missing { background: #f6f6f6; border: 1px dashed #bbb; padding: 8px; }
.plot { display: block; margin: 8px 0; } pre { font-size: 11px; white-space: pre-wrap; word-break: break-all; }
"""


def render_incident_html(incident: dict, runbook_url: str | None = None, dashboard_url: str | None = None) -> str:
    """The whole page as one string (UTF-8, no external resource, no script).

    ``runbook_url`` and ``dashboard_url`` are base URLs (the runbook's anchor
    and the model/attribute variables are appended); see ``incident_links``.
    """
    evidence = incident.get("evidence") or {}
    job = incident.get("job") or {}
    metrics = firing_metrics(incident)
    title = f"fairwatch incident {incident.get('id')}: {incident.get('model')} / {incident.get('attribute')}"
    facts = [metric_facts(incident, m) for m in metrics]
    # The metric furthest beyond its threshold leads; unknown excesses last.
    facts.sort(key=lambda f: -(f.excess if f.excess is not None else -math.inf))
    headlines = "".join(f'<p class="headline{" more" if i else ""}">{e(headline_sentence(incident, f, _utc))}</p>'
                        for i, f in enumerate(facts)) or (
        '<p class="headline">No firing alert with a metric is recorded for this incident: '
        "what breached is unknown. Next: read the alerts below and the model dashboard.</p>")
    links = incident_links(incident, runbook_url, dashboard_url)
    link_bar = (f'<p class="links"><a href="{e(_safe_href(links["runbook"]))}">Runbook: FairnessGapBreach</a>'
                f'<a href="{e(_safe_href(links["dashboard"]))}">Model dashboard ({e(str(incident.get("model")))}'
                f' / {e(str(incident.get("attribute")))})</a></p>')
    header = _table(["field", "value"], [
        ["model", e(str(incident.get("model")))], ["attribute", e(str(incident.get("attribute")))],
        ["firing metrics", e(", ".join(metrics) or "-")], ["state", e(str(incident.get("state")))],
        ["opened", e(_utc(incident.get("opened_at")))], ["updated", e(_utc(incident.get("updated_at")))],
        ["job", job_badge(job)], ["candidate", promotion_badge(job)],
    ], raw_html_columns=(1,))
    instant = [[f.metric, _num(f.bound, 4), _num(f.threshold, 4), _num(f.excess, 4)] for f in facts]
    gap_plots = "".join(f"<h3>{e(m)}</h3>{gap_plot(incident, m, i)}" for i, m in enumerate(metrics)) or \
        '<p class="missing">No firing alert names a metric: nothing to plot.</p>'
    alerts = [[a.get("status", ""), a.get("startsAt", ""), (a.get("labels") or {}).get("metric", ""),
               (a.get("labels") or {}).get("severity", ""), (a.get("annotations") or {}).get("summary", "")]
              for a in incident.get("alerts", [])]
    report = job.get("report")
    raw_report = (f"<details><summary>job report (JSON)</summary><pre>{e(json.dumps(report, indent=1))}</pre>"
                  f"</details>") if report else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{e(title)}</h1>{headlines}{link_bar}{header}"
        f"<h2>Decision at opening</h2>"
        f"{_table(['metric', 'anytime-valid bound', 'threshold', 'beyond by'], instant) if instant else ''}"
        f"<h2>Gap over time, per firing metric</h2>{gap_plots}"
        f"<h2>Per-group rates</h2>{rates_plot(incident)}"
        f"<h2>Exemplar event ids</h2>{exemplar_section(incident)}"
        f"<h2>Promotion</h2>{promotion_section(job)}"
        f"<h2>Before / after the fine-tune</h2>{finetune_plots(incident)}"
        f"<h2>Job</h2>{job_section(job)}{ablation_section(report)}{raw_report}"
        f"<h2>Alerts</h2>{_table(['status', 'starts', 'metric', 'severity', 'summary'], alerts)}"
        f"<h2>Timeline</h2>{_table(['at', 'change', 'detail'], timeline_rows(incident))}"
        f"<details><summary>evidence (JSON)</summary><pre>{e(json.dumps(evidence, indent=1))}</pre></details>"
        "</body></html>\n"
    )
