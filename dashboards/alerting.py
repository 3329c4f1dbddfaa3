"""Grafana-managed alert rules equivalent to the Prometheus alerting rules of ``alerts.rules``.

Rendered from :func:`alerts.rules.alerting_rules` rather than written again,
so the two cannot drift apart: the same expression, ``for``, labels and
annotations. Prometheus fires one alert per series its expression returns;
the Grafana rule runs that expression verbatim (query ``A``) and its
condition ``C`` is true for every returned sample, NaN included, so it fires
for exactly the same series. No data means "no series", which in Prometheus
is "not firing": hence ``noDataState: OK``.

Grafana's templates lack Prometheus' ``query`` function: an annotation that
queries a series (the breach summary's bound and threshold) gets that series
as an extra query of the rule and reads it with ``$values.<refId>``.
"""

from __future__ import annotations

import re

import yaml

from fairwatch.alerts.rules import QUERY_VALUE_TEMPLATE, AlertSettings, alerting_rules

DATASOURCE_UID = "fairwatch-prometheus"  # the provisioned datasource (deploy/grafana/provisioning/datasources)
FOLDER = "fairwatch"
GROUP = "fairwatch-alerts"
INTERVAL = "30s"
# The window the instant queries look back over, as Prometheus' default lookback.
RELATIVE_TIME = {"from": 600, "to": 0}


def _query(ref: str, expr: str) -> dict:
    return {"refId": ref, "relativeTimeRange": dict(RELATIVE_TIME), "datasourceUid": DATASOURCE_UID,
            "model": {"refId": ref, "expr": expr, "instant": True, "range": False, "datasource":
                      {"type": "prometheus", "uid": DATASOURCE_UID}}}


def _condition(ref: str, source: str) -> dict:
    # True for every sample the expression returned (a NaN sample still makes a Prometheus alert).
    return {"refId": ref, "datasourceUid": "__expr__",
            "model": {"refId": ref, "type": "math", "expression": f"${source} == ${source} || is_nan(${source})",
                      "datasource": {"type": "__expr__", "uid": "__expr__"}}}


def _grafana_template(text: str, extra: dict[str, str]) -> str:
    """Prometheus annotation template -> Grafana's: ``$value`` of query A, queried series as extra queries."""
    def replace(match: re.Match) -> str:
        ref = f"Q{len(extra)}"
        extra[ref] = match.group("expr")
        return f'{{{{ with $values.{ref} }}}}{{{{ printf "%.3f" .Value }}}}{{{{ else }}}}?{{{{ end }}}}'

    text = QUERY_VALUE_TEMPLATE.sub(replace, text)
    return text.replace("$value ", "$values.A.Value ").replace("$value}", "$values.A.Value}")


def grafana_rule(rule: dict) -> dict:
    extra: dict[str, str] = {}
    annotations = {key: _grafana_template(value, extra) for key, value in rule.get("annotations", {}).items()}
    data = [_query("A", rule["expr"]), *(_query(ref, expr) for ref, expr in extra.items()), _condition("C", "A")]
    return {
        "uid": "fairwatch-" + re.sub(r"(?<!^)(?=[A-Z])", "-", rule["alert"]).lower(),
        "title": rule["alert"], "condition": "C", "data": data,
        "for": rule.get("for", "0s"), "labels": dict(rule.get("labels", {})), "annotations": annotations,
        "noDataState": "OK", "execErrState": "Error", "isPaused": False,
    }


def provisioning(settings: AlertSettings | None = None) -> dict:
    rules = [grafana_rule(rule) for rule in alerting_rules(settings or AlertSettings())]
    return {"apiVersion": 1,
            "groups": [{"orgId": 1, "name": GROUP, "folder": FOLDER, "interval": INTERVAL, "rules": rules}]}


def render(settings: AlertSettings | None = None) -> str:
    header = ("# Rendered by `fairwatch dashboards render` from alerts/rules.py (the Prometheus alerting rules);\n"
              "# do not edit by hand. For teams that alert from Grafana instead of Alertmanager: load one, not both.\n")
    return header + yaml.safe_dump(provisioning(settings), sort_keys=False, width=120, allow_unicode=True)


def expressions(document: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every Prometheus query in a provisioning document."""
    return [(f'{rule["title"]} / {query["refId"]}', query["model"]["expr"])
            for group in document["groups"] for rule in group["rules"] for query in rule["data"]
            if query["datasourceUid"] != "__expr__"]
