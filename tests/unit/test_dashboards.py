"""The rendered dashboards and Grafana alert rules: fresh, built from exported names, equivalent to the alerts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from fairwatch.alerts.rules import AlertSettings, alerting_rules
from fairwatch import metric_reference
from fairwatch.consumers import metric_names as consumer_metric_names
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
    """Every series name fairwatch exports, from the modules that define them (the core's, the scorer's and
    the adapters': the metric reference reads the same ones)."""
    found = {value for module in metric_reference.MODULES for value in vars(module).values()
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
                     metric_names.EVENTS, consumer_metric_names.CONSUMER_LAG, metric_names.DRIFT_LAST_TIMESTAMP,
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


def test_the_query_template_is_found_where_query_value_wrote_it():
    from fairwatch.alerts.rules import QUERY_VALUE_TEMPLATE, query_value

    text = "bound " + query_value('x:y{model="%s",attribute="%s",metric="%s"}') + " vs"
    match = QUERY_VALUE_TEMPLATE.search(text)
    assert match is not None and match.group("expr") == "x:y"
    assert text[:match.start()] == "bound " and text[match.end():] == " vs"


def test_provisioning_points_at_the_datasource_and_dashboards():
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["uid"] == alerting.DATASOURCE_UID and datasource["type"] == "prometheus"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "fairwatch.yml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards/json:{provider['options']['path']}:ro" in mounts
    for document in dashboards().values():
        assert json.loads(to_text(document))["uid"] == document["uid"]


# --------------------------------------------------------------------------- layout and schema


def _lines(document: dict) -> dict[int, list[dict]]:
    """Non-row panels by the grid line (y) they start on."""
    lines: dict[int, list[dict]] = {}
    for p in document["panels"]:
        if p["type"] != "row":
            lines.setdefault(p["gridPos"]["y"], []).append(p)
    return lines


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_line_of_panels_tiles_24_columns_without_a_hole(name):
    """Left to right, each line of panels covers x = 0..24 exactly once, at one height (a taller
    neighbour would leave a hole under the shorter one)."""
    for y, panels in _lines(dashboards()[name]).items():
        spans = sorted((p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"]) for p in panels)
        titles = [p["title"] for p in panels]
        assert spans[0][0] == 0 and spans[-1][1] == 24, f"{name} y={y}: {spans} {titles}"
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), f"{name} y={y}: gap or overlap {spans} {titles}"
        assert len({p["gridPos"]["h"] for p in panels}) == 1, f"{name} y={y}: heights differ {titles}"


def test_the_tiling_check_catches_a_hole():
    overview = dashboards()["fairwatch-overview.json"]
    stat = next(p for p in overview["panels"] if p["type"] == "stat")
    stat["gridPos"]["w"] = 6
    with pytest.raises(AssertionError):
        for y, panels in _lines(overview).items():
            assert sum(p["gridPos"]["w"] for p in panels) == 24


def test_thresholds_of_different_scales_never_share_a_panel():
    """A difference's threshold (0.1) and a ratio's (0.8) on one axis squash the first to the floor."""
    for document in dashboards().values():
        for p in document["panels"]:
            exprs = [t["expr"] for t in p.get("targets", [])]
            if p["type"] != "timeseries" or not any(metric_names.DECISION_THRESHOLD in x for x in exprs):
                continue
            for expr in exprs:
                listed = re.search(r'metric=~"([a-z_|]+)"', expr)  # named metrics, none of them a ratio
                one_side = (('!~".*ratio"' in expr) != ('=~".*ratio"' in expr) or 'metric="$metric"' in expr
                            or (listed is not None and not any(m.endswith("ratio") for m in listed[1].split("|"))))
                assert one_side, f"{document['uid']} / {p['title']}: {expr}"


# Grafana's dashboard model, as far as it can be checked offline: the fields Grafana's
# schema requires or constrains. Sources: the dashboard kind (grafana/grafana,
# kinds/dashboard/dashboard_kind.cue, and its generated reference
# docs/sources/developers/kinds/core/dashboard/schema-reference.md) and "JSON model"
# (https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/).
# GridPos: h > 0, 0 < w <= 24, 0 <= x < 24, y >= 0; panels need a non-empty type; variables a
# name and one of the kinds; annotations a name, datasource, enable and iconColor.
DATASOURCE_REF = {"type": "object", "required": ["type", "uid"],
                  "properties": {"type": {"type": "string"}, "uid": {"type": "string"}}}
GRID_POS = {"type": "object", "required": ["h", "w", "x", "y"], "properties": {
    "h": {"type": "integer", "minimum": 1}, "w": {"type": "integer", "minimum": 1, "maximum": 24},
    "x": {"type": "integer", "minimum": 0, "maximum": 23}, "y": {"type": "integer", "minimum": 0}}}
TARGET = {"type": "object", "required": ["refId", "expr", "datasource"], "properties": {
    "refId": {"type": "string", "minLength": 1}, "expr": {"type": "string", "minLength": 1},
    "datasource": DATASOURCE_REF}}
PANEL = {"type": "object", "required": ["type", "id", "gridPos", "title"], "properties": {
    "type": {"type": "string", "minLength": 1}, "id": {"type": "integer", "minimum": 0}, "gridPos": GRID_POS,
    "title": {"type": "string"}, "datasource": DATASOURCE_REF, "targets": {"type": "array", "items": TARGET},
    "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]},
    "collapsed": {"type": "boolean"}, "panels": {"type": "array"}}}
VARIABLE = {"type": "object", "required": ["name", "type"], "properties": {
    "name": {"type": "string", "minLength": 1},
    "type": {"enum": ["query", "adhoc", "constant", "datasource", "interval", "textbox", "custom", "system"]}}}
ANNOTATION = {"type": "object", "required": ["name", "datasource", "enable", "iconColor"]}
DASHBOARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
    "required": ["uid", "title", "schemaVersion", "editable", "graphTooltip", "time", "panels", "templating",
                 "annotations"],
    "properties": {
        "uid": {"type": "string", "minLength": 1, "maxLength": 40, "pattern": "^[a-zA-Z0-9_-]+$"},
        "title": {"type": "string", "minLength": 1}, "schemaVersion": {"type": "integer", "minimum": 36},
        "editable": {"type": "boolean"}, "graphTooltip": {"enum": [0, 1, 2]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"]},
        "refresh": {"type": "string"}, "timezone": {"type": "string"},
        "panels": {"type": "array", "items": PANEL},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array",
                                                                                        "items": VARIABLE}}},
        "annotations": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array",
                                                                                         "items": ANNOTATION}}},
        "links": {"type": "array", "items": {"type": "object", "required": ["title", "type"]}},
    },
}


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_committed_json_fits_grafanas_dashboard_schema(name):
    jsonschema = pytest.importorskip("jsonschema", reason="pip install 'fairwatch[test]' (jsonschema)")
    document = json.loads((JSON_DIR / name).read_text())
    validator = jsonschema.Draft202012Validator(DASHBOARD_SCHEMA)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors
    broken = {**document, "panels": [{**document["panels"][1], "gridPos": {"h": 8, "w": 25, "x": 0, "y": 0}}]}
    assert list(validator.iter_errors(broken)), "the schema must refuse a panel wider than the grid"


def test_gaps_combine_workers_with_the_worse_side_in_real_promql(tmp_path):
    """Two workers: the panel shows the larger difference and the smaller ratio (promtool evaluates it)."""
    import shutil
    import subprocess

    from fairwatch.dashboards.render import instantiate

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make test` installs Debian's prometheus package"
    model = next(d for d in dashboards().values() if d["uid"] == MODEL_UID)
    gap_panel = next(p for p in model["panels"] if p["title"].startswith("$metric on $attribute"))
    expr = next(t["expr"] for t in gap_panel["targets"] if t["refId"] == "GAP")
    variables = {"model": "credit", "attribute": "race", "window": "all"}

    def series(metric: str, worker: str, value: float) -> dict:
        return {"series": f'{metric_names.GAP}{{model="credit",attribute="race",metric="{metric.split(":")[0]}",'
                          f'window="all",instance="{worker}"}}', "values": f"{value}x3"}

    cases = [("demographic_parity_ratio", 0.9, 0.6, 0.6), ("demographic_parity_difference", 0.1, 0.3, 0.3)]
    spec = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [series(m, w, v) for m, a, b, _ in cases for w, v in (("a:1", a), ("b:1", b))],
        "promql_expr_test": [{"expr": instantiate(expr, {**variables, "metric": m}), "eval_time": "2m",
                              "exp_samples": [{"labels": f'{{metric="{m}"}}', "value": worst}]}
                             for m, _, _, worst in cases]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
