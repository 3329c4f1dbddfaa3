"""Small builders for Grafana dashboard JSON: targets, panels, variables.

Plain dicts rather than grafanalib or grafana-foundation-sdk: the dashboards
need a dozen panel shapes, and a library would add a dependency (and its
schema version) for what these few functions do in sight of the JSON.
"""

from __future__ import annotations

from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_WIDTH = 24


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False) -> dict:
    """One Prometheus query of a panel."""
    out: dict[str, Any] = {
        "datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
        "range": not instant, "instant": instant,
    }
    if table:
        out["format"] = "table"
    return out


def panel(kind: str, title: str, targets: list[dict], *, description: str = "", unit: str = "short",
          width: int = 12, height: int = 8, overrides: list[dict] | None = None, options: dict | None = None,
          field_defaults: dict | None = None, transformations: list[dict] | None = None) -> dict:
    """A panel of ``kind`` (timeseries, stat, table); placed later by :func:`layout`."""
    defaults: dict[str, Any] = {"unit": unit}
    defaults.update(field_defaults or {})
    out: dict[str, Any] = {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {}, "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
    }
    if transformations:
        out["transformations"] = transformations
    return out


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": PANEL_WIDTH, "x": 0, "y": 0}}


def layout(panels: list[dict]) -> list[dict]:
    """Give each panel an id and a grid position, left to right, top to bottom."""
    x = y = row_height = 0
    for number, item in enumerate(panels, 1):
        item["id"] = number
        width, height = item["gridPos"]["w"], item["gridPos"]["h"]
        if item["type"] == "row" or x + width > PANEL_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        item["gridPos"].update(x=x, y=y)
        if item["type"] == "row":
            y += height
            continue
        x += width
        row_height = max(row_height, height)
    return panels


def override_by_name(name: str, **properties: Any) -> dict:
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": key, "value": value} for key, value in properties.items()]}


def override_by_query(ref: str, **properties: Any) -> dict:
    return {"matcher": {"id": "byFrameRefID", "options": ref},
            "properties": [{"id": key, "value": value} for key, value in properties.items()]}


def datasource_variable() -> dict:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": []}


def query_variable(name: str, label: str, query: str, *, default: str | None = None) -> dict:
    """A variable filled from ``label_values(...)`` on the Prometheus datasource."""
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
            "current": {"text": default, "value": default} if default else {},
            "refresh": 2, "sort": 1, "multi": False, "includeAll": False, "hide": 0, "options": []}


def custom_variable(name: str, label: str, values: tuple[str, ...], default: str) -> dict:
    return {"name": name, "label": label, "type": "custom", "query": ",".join(values),
            "current": {"text": default, "value": default}, "multi": False, "includeAll": False, "hide": 0,
            "options": [{"text": v, "value": v, "selected": v == default} for v in values]}


def dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list[dict],
              annotations: list[dict] | None = None, links: list[dict] | None = None) -> dict:
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
               "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
               "type": "dashboard"}
    return {
        "uid": uid, "title": title, "description": description, "tags": ["fairwatch"],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "refresh": "30s",
        "schemaVersion": 39, "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": [builtin, *(annotations or [])]},
        "templating": {"list": variables}, "links": links or [], "panels": layout(panels),
    }
