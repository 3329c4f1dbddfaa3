"""The rendered dashboards and Grafana alert rules: fresh, built from exported names, equivalent to the alerts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from fairwatch.alerts.rules import AlertSettings, alerting_rules
from fairwatch.dashboards import alerting
from fairwatch.dashboards.render import JSON_DIR, MODEL_UID, dashboards, queries, to_text, variable_names
from fairwatch.monitor import metric_names
from fairwatch.monitor.scorer import metric_names as scorer_metric_names

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
RULES = REPO / "alerts" / "rules" / "fairwatch.rules.yml"
HISTOGRAMS = {metric_names.BATCH_SECONDS, scorer_metric_names.SCORER_BATCH_SECONDS}
NAME = re.compile(r"\bfairwatch[a-zA-Z0-9_:]*")


def exported_names() -> set[str]:
    """Every series name the monitor exports, from the one module that defines them (and the scorer's)."""
    found = {value for module in (metric_names, scorer_metric_names) for value in vars(module).values()
             if isinstance(value, str) and value.startswith("fairwatch_")}
    return found | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}


def recorded_names() -> set[str]:
    return {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}


def names_in(expr: str) -> set[str]:
    # Label values such as "fairwatch" never start a selector name: strip quoted strings first.
    return set(NAME.findall(re.sub(r'"[^"]*"', '""', expr)))


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_committed_json_is_what_the_code_renders(name):
    committed = JSON_DIR / name
    assert committed.exists(), "run `fairwatch dashboards render --out dashboards/json --alerting deploy/grafana/provisioning/alerting/fairwatch.yml`"
    assert committed.read_text() == to_text(dashboards()[name]), "run `fairwatch dashboards render --out dashboards/json --alerting deploy/grafana/provisioning/alerting/fairwatch.yml`"


def test_committed_grafana_alert_rules_are_what_the_code_renders():
    assert (PROVISIONING / "alerting" / "fairwatch.yml").read_text() == alerting.render(), \
        "run `fairwatch dashboards render --out dashboards/json --alerting deploy/grafana/provisioning/alerting/fairwatch.yml`"


def test_every_name_a_dashboard_queries_is_exported_or_recorded():
    known = exported_names() | recorded_names()
    used: set[str] = set()
    for document in dashboards().values():
        for where, expr in queries(document):
            found = names_in(expr)
            assert found, f"{where} names no fairwatch series: {expr}"
            assert found <= known, f"{where}: unknown {sorted(found - known)}"
            used |= found
    # The panels the issue asks for are there, by the names they chart.
    for required in (metric_names.DECISION_BOUND, metric_names.DECISION_THRESHOLD, metric_names.DECISION_BREACH,
                     metric_names.GAP, metric_names.GAP_LOWER, metric_names.GAP_UPPER, metric_names.GROUP_RATE,
                     metric_names.EVENTS, metric_names.CONSUMER_LAG, metric_names.DRIFT_LAST_TIMESTAMP,
                     scorer_metric_names.COUNTERFACTUAL_FLIPPED, scorer_metric_names.COUNTERFACTUAL_TERM_SCORE_CHANGE,
                     scorer_metric_names.SCORER_TEXTS, f"{scorer_metric_names.SCORER_BATCH_SECONDS}_bucket"):
        assert required in used, required


def test_an_unknown_name_would_be_caught():
    assert names_in('rate(fairwatch_evnts_total{job="fairwatch_x"}[5m])') == {"fairwatch_evnts_total"}
    assert not names_in("rate(fairwatch_evnts_total[5m])") <= exported_names()


def test_every_variable_a_query_uses_is_defined():
    for document in dashboards().values():
        defined = variable_names(document)
        texts = [expr for _, expr in queries(document)] + [p["title"] for p in document["panels"]]
        used = {m for text in texts for m in re.findall(r"\$\{?(\w+)", text) if not m.startswith("__")}
        assert used <= defined, f"{document['uid']}: undefined {used - defined}"


def test_panels_do_not_overlap_and_ids_are_unique():
    for document in dashboards().values():
        cells: set[tuple[int, int]] = set()
        ids = [p["id"] for p in document["panels"]]
        assert len(ids) == len(set(ids))
        for p in document["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{p['title']} overlaps"
            cells |= mine


def test_the_alerts_link_to_the_drilldown_with_its_variables():
    settings = AlertSettings()
    assert settings.dashboard_url.endswith(f"/d/{MODEL_UID}")
    model = next(d for d in dashboards().values() if d["uid"] == MODEL_UID)
    assert {"model", "attribute"} <= variable_names(model)


def test_grafana_rules_are_the_prometheus_alerting_rules():
    prometheus = alerting_rules(AlertSettings())
    grafana = yaml.safe_load(alerting.render())["groups"][0]["rules"]
    assert [r["title"] for r in grafana] == [r["alert"] for r in prometheus]
    for ours, theirs in zip(grafana, prometheus):
        data = {q["refId"]: q for q in ours["data"]}
        assert data["A"]["model"]["expr"] == theirs["expr"]
        assert data["A"]["datasourceUid"] == alerting.DATASOURCE_UID
        assert ours["for"] == theirs.get("for", "0s")
        assert ours["labels"] == theirs["labels"]
        assert ours["annotations"].keys() == theirs["annotations"].keys()
        assert ours["annotations"]["runbook_url"] == theirs["annotations"]["runbook_url"]
        assert ours["condition"] in data and data[ours["condition"]]["datasourceUid"] == "__expr__"
        assert ours["noDataState"] == "OK"  # no series: Prometheus does not fire either
        for text in ours["annotations"].values():
            assert "| query" not in text and "$value " not in text and "$value}" not in text
            assert set(re.findall(r"\$values\.(\w+)", text)) <= set(data)
    uids = [r["uid"] for r in grafana]
    assert len(uids) == len(set(uids)) and all(len(u) <= 40 for u in uids)


def test_the_breach_summary_reads_bound_and_threshold_from_extra_queries():
    rule = next(r for r in yaml.safe_load(alerting.render())["groups"][0]["rules"] if r["title"] == "FairnessGapBreach")
    extra = {q["model"]["expr"] for q in rule["data"] if q["refId"] not in ("A", "C")}
    assert extra == {"fairwatch:decision_bound:worst", "fairwatch:decision_threshold"}
    assert extra <= recorded_names()


def test_provisioning_points_at_the_datasource_and_dashboards():
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["uid"] == alerting.DATASOURCE_UID and datasource["type"] == "prometheus"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "fairwatch.yml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards/json:{provider['options']['path']}:ro" in mounts
    for document in dashboards().values():
        assert json.loads(to_text(document))["uid"] == document["uid"]
