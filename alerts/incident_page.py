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
from typing import Any

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


def incident_metric(incident: dict) -> str:
    """The metric the alerts named (the first one), or the one the evidence series was taken for."""
    for alert in incident.get("alerts", []):
        metric = (alert.get("labels") or {}).get("metric")
        if metric:
            return str(metric)
    return str((incident.get("evidence") or {}).get("series_range", {}).get("metric", ""))


def _first_points(series: dict, key: str, skipped: list[int]) -> list[list[float]]:
    """The first series' points; those whose time is not a valid time are left out and counted in ``skipped``."""
    entries = series.get(key)
    if not isinstance(entries, list) or not entries:
        return []
    points = []
    for t, v in entries[0].get("points", []):
        if _valid_time(t):
            points.append([float(t), float(v)])
        else:
            skipped[0] += 1
    return points


def gap_plot(incident: dict) -> str:
    series = (incident.get("evidence") or {}).get("series") or {}
    metric = incident_metric(incident) or "gap"
    skipped = [0]
    lines = [
        {"name": f"{metric} (since start)", "points": _first_points(series, "gap", skipped), "color": GAP_COLOR},
        {"name": "decision bound (anytime-valid)", "points": _first_points(series, "bound", skipped),
         "color": BOUND_COLOR, "dash": True},
        {"name": "threshold", "points": _first_points(series, "threshold", skipped), "color": THRESHOLD_COLOR},
    ]
    lower, upper = _first_points(series, "gap_lower", skipped), _first_points(series, "gap_upper", skipped)
    band = {"name": "95% interval (display)", "lower": lower, "upper": upper, "color": BAND_COLOR} \
        if lower and upper else None
    chart = line_chart("plot-gap", f"{metric} over time", lines, band)
    if skipped[0]:
        chart += (f'<p class="note">{skipped[0]} evidence sample(s) with a timestamp outside 1970-9999 '
                  "were left out of this plot.</p>")
    return chart


def rates_plot(incident: dict) -> str:
    evidence = incident.get("evidence") or {}
    rates = evidence.get("group_rates")
    if not isinstance(rates, list):
        return _no_data("plot-rates", "per-group rates", "no group rates in the evidence")

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


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _compact(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_section(job: dict) -> str:
    report = job.get("report") if isinstance(job.get("report"), dict) else None
    rows = [["state", job.get("state", "-")], ["command", " ".join(map(str, job.get("command", []))) or "-"],
            ["report", job.get("report_path", "-")], ["candidate", job.get("candidate_dir", "-")]]
    if report:
        decision = report.get("decision") or {}
        rows += [
            ["promote (gates)", decision.get("promote", "-")],
            ["reasons", "; ".join(map(str, decision.get("reasons") or [])) or "all gates pass"],
            ["gate gap before -> after", f"{_num(decision.get('gap_before'))} -> {_num(decision.get('gap_after'))}"],
            ["accuracy before -> after", f"{_num((report.get('before') or {}).get('accuracy'))} -> "
                                         f"{_num((report.get('after') or {}).get('accuracy'))}"],
            ["AUC before -> after", f"{_num((report.get('before') or {}).get('auc'))} -> "
                                    f"{_num((report.get('after') or {}).get('auc'))}"],
            ["data", _compact(report.get("data", {}))],
            ["training", _compact({k: v for k, v in (report.get("training") or {}).items() if k != "history"})],
        ]
    return _table(["job", "value"], rows)


STYLE = """
body { font-family: sans-serif; margin: 20px; color: #222; background: #fff; max-width: 1100px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; } td, th { border: 1px solid #ddd;
padding: 3px 6px; text-align: left; vertical-align: top; word-break: break-word; } th { background: #f4f4f4; }
.state { display: inline-block; padding: 2px 8px; border-radius: 4px; background: #fde2e2; }
.plot { display: block; margin: 8px 0; } pre { font-size: 11px; white-space: pre-wrap; word-break: break-all; }
"""


def render_incident_html(incident: dict) -> str:
    """The whole page as one string (UTF-8, no external resource)."""
    evidence = incident.get("evidence") or {}
    job = incident.get("job") or {}
    metrics = sorted({str((a.get("labels") or {}).get("metric", "?")) for a in incident.get("alerts", [])})
    title = f"fairwatch incident {incident.get('id')}: {incident.get('model')} / {incident.get('attribute')}"
    header = _table(["field", "value"], [
        ["model", incident.get("model")], ["attribute", incident.get("attribute")],
        ["metric", ", ".join(metrics) or "-"], ["state", incident.get("state")],
        ["opened", _utc(incident.get("opened_at"))], ["updated", _utc(incident.get("updated_at"))],
        ["job", job.get("state", "-")],
    ])
    instant = [[r["labels"].get("metric", ""), key, _num(r["value"], 4)]
               for key in ("bound", "threshold") if isinstance(evidence.get(key), list) for r in evidence[key]]
    alerts = [[a.get("status", ""), a.get("startsAt", ""), (a.get("labels") or {}).get("metric", ""),
               (a.get("labels") or {}).get("severity", ""), (a.get("annotations") or {}).get("summary", ""),
               a.get("fingerprint", "")] for a in incident.get("alerts", [])]
    timeline = [[_utc(t.get("at")), t.get("change", ""), _compact(t.get("detail", {}))]
                for t in incident.get("timeline", [])]
    report = job.get("report")
    raw_report = (f"<details><summary>job report (JSON)</summary><pre>{e(json.dumps(report, indent=1))}</pre>"
                  f"</details>") if report else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{e(title)}</h1><p><span class=\"state\">{e(str(incident.get('state')))}</span> "
        f"opened {e(_utc(incident.get('opened_at')))}</p>{header}"
        f"<h2>Gap over time</h2>{gap_plot(incident)}"
        f"{_table(['metric', 'decision evidence at opening', 'value'], instant) if instant else ''}"
        f"<h2>Per-group rates</h2>{rates_plot(incident)}"
        f"<h2>Before / after the fine-tune</h2>{finetune_plots(incident)}"
        f"<h2>Job</h2>{job_section(job)}{raw_report}"
        f"<h2>Alerts</h2>{_table(['status', 'starts', 'metric', 'severity', 'summary', 'fingerprint'], alerts)}"
        f"<h2>Timeline</h2>{_table(['at', 'change', 'detail'], timeline)}"
        f"<details><summary>evidence (JSON)</summary><pre>{e(json.dumps(evidence, indent=1))}</pre></details>"
        "</body></html>\n"
    )
