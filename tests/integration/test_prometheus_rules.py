"""The rendered rules against the real promtool: valid, fresh, and firing when they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fairwatch.alerts.rules import AlertSettings, render
from fairwatch.monitor.config import MonitorConfig

RULES = Path(__file__).resolve().parents[2] / "alerts" / "rules" / "fairwatch.rules.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: `make test` installs Debian's prometheus package"
    return path


def test_committed_rules_are_what_the_code_renders():
    assert RULES.read_text() == render(MonitorConfig(), AlertSettings()), "run `fairwatch rules render --out alerts/rules`"


def test_promtool_accepts_the_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _annotations(alert: str, summary: str, **labels) -> dict:
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == alert)
    out = dict(rule["annotations"])
    out["summary"] = summary
    url = out["dashboard_url"]
    for key, value in labels.items():
        url = url.replace("{{ $labels.%s }}" % key, value)
    out["dashboard_url"] = url
    return out


BREACH = {"model": "credit", "attribute": "race", "metric": "demographic_parity_difference"}
SELECTOR = 'model="credit",attribute="race",metric="demographic_parity_difference"'
GENERATION_SELECTOR = 'model="chat",attribute="sex",metric="refusal_rate_difference"'


def _events(group: str, cell: str, per_minute: int) -> dict:
    return {"series": f'fairwatch_group_events_total{{model="credit",attribute="race",group="{group}",cell="{cell}"}}',
            "values": f"0+{per_minute}x20"}


def privacy_floor_case() -> dict:
    """Both groups are well above min_group_size (50 predictions in 5m), but "few_labels" has only
    5 labelled negatives and "many_labels" 20: an FPR leaves the rules only where its own
    denominator reaches the privacy floor (10); "few_labels"' 15 labelled positives keep its TPR."""
    floor = MonitorConfig().privacy_floor
    assert floor == 10
    series = [_events(g, "predictions", 10) for g in ("few_labels", "many_labels")]
    series += [_events("few_labels", "fp", 1), _events("few_labels", "tn", 0),
               _events("few_labels", "tp", 3), _events("few_labels", "fn", 0)]
    series += [_events("many_labels", "fp", 2), _events("many_labels", "tn", 2),
               _events("many_labels", "tp", 1), _events("many_labels", "fn", 1)]

    def sample(rule: str, group: str, value: float) -> dict:
        return {"labels": f'{rule}{{model="credit",attribute="race",group="{group}"}}', "value": value}

    return {
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [
            {"expr": "fairwatch:group_fpr:5m", "eval_time": "10m",
             "exp_samples": [sample("fairwatch:group_fpr:5m", "many_labels", 0.5)]},
            # many_labels has 10 labelled positives: exactly the floor, kept.
            {"expr": "fairwatch:group_tpr:5m", "eval_time": "10m",
             "exp_samples": [sample("fairwatch:group_tpr:5m", "few_labels", 1.0),
                             sample("fairwatch:group_tpr:5m", "many_labels", 0.5)]},
            # A gap needs two groups: with one FPR left there is nothing to compare.
            {"expr": "fairwatch:false_positive_rate_difference:5m", "eval_time": "10m", "exp_samples": []},
            {"expr": "fairwatch:equal_opportunity_difference:5m", "eval_time": "10m",
             "exp_samples": [{"labels": 'fairwatch:equal_opportunity_difference:5m{model="credit",attribute="race"}',
                              "value": 0.5}]},
        ],
    }


def test_the_rules_floor_every_rate_denominator():
    """Every recorded rate is guarded by its own denominator against the floor, in every window."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    floor = MonitorConfig().privacy_floor
    for rate, cells in (("tpr", ("tp", "fn")), ("fpr", ("fp", "tn"))):
        for window in ("5m", "1h", "24h"):
            (rule,) = [r for r in rules if r.get("record") == f"fairwatch:group_{rate}:{window}"]
            assert f">= {floor}" in rule["expr"] and all(f'cell="{c}"' in rule["expr"] for c in cells)


def unit_tests() -> list[dict]:
    breach_labels = {**BREACH, "severity": "page"}
    breach_summary = ("credit: demographic_parity_difference on race is beyond its threshold "
                      "(anytime-valid bound 0.142 vs threshold 0.100)")
    return [
        {   # One worker's decision says breach for 10 minutes: it pages after 5.
            "interval": "1m",
            "input_series": [
                {"series": f'fairwatch_decision_breach{{{SELECTOR},instance="w1"}}', "values": "0 0 1x12"},
                {"series": f'fairwatch_decision_breach{{{SELECTOR},instance="w2"}}', "values": "0x14"},
                {"series": f'fairwatch_decision_bound{{{SELECTOR},instance="w1"}}', "values": "0.05 0.05 0.142x12"},
                {"series": f'fairwatch_decision_bound{{{SELECTOR},instance="w2"}}', "values": "0.02x14"},
                {"series": f'fairwatch_decision_threshold{{{SELECTOR},instance="w1"}}', "values": "0.1x14"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "FairnessGapBreach", "exp_alerts": []},
                {"eval_time": "8m", "alertname": "FairnessGapBreach", "exp_alerts": [
                    {"exp_labels": breach_labels, "exp_annotations": _annotations(
                        "FairnessGapBreach", breach_summary, model="credit", attribute="race")},
                ]},
            ],
        },
        {   # A huge point-estimate gap on a small group, but the core's bound straddles the
            # threshold: breach stays 0 and nothing pages; a flapping breach shorter than 5m neither.
            "interval": "1m",
            "input_series": [
                {"series": 'fairwatch_group_events_total{model="credit",attribute="race",group="tiny",cell="predictions"}',
                 "values": "0+1x20"},
                {"series": 'fairwatch_group_events_total{model="credit",attribute="race",group="tiny",cell="positives"}',
                 "values": "0+1x20"},
                {"series": 'fairwatch_group_events_total{model="credit",attribute="race",group="big",cell="predictions"}',
                 "values": "0+1000x20"},
                {"series": 'fairwatch_group_events_total{model="credit",attribute="race",group="big",cell="positives"}',
                 "values": "0+100x20"},
                {"series": f'fairwatch_decision_breach{{{SELECTOR}}}', "values": "0 0 0 1 1 1 0 0 1 1 0 0 0 0 0 0 0 0 0 0"},
                {"series": f'fairwatch_decision_bound{{{SELECTOR}}}', "values": "0.05x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "FairnessGapBreach", "exp_alerts": []},
                {"eval_time": "18m", "alertname": "FairnessGapBreach", "exp_alerts": []},
            ],
            # The recording rule still shows the point estimate (for dashboards), tiny group excluded (< 30).
            "promql_expr_test": [
                {"expr": 'fairwatch:group_selection_rate:5m{group="big"}', "eval_time": "10m",
                 "exp_samples": [{"labels": 'fairwatch:group_selection_rate:5m{model="credit",attribute="race",group="big"}',
                                  "value": 0.1}]},
                {"expr": 'fairwatch:group_selection_rate:5m{group="tiny"}', "eval_time": "10m", "exp_samples": []},
            ],
        },
        privacy_floor_case(),
        {   # A shadow's models breach for 10 minutes: compared in the incident, never paged on.
            "interval": "1m",
            "input_series": [
                {"series": f'fairwatch_decision_breach{{{SELECTOR.replace("credit", f"credit:{side}")}}}',
                 "values": "1x12"} for side in ("baseline", "candidate")
            ],
            "alert_rule_test": [{"eval_time": "10m", "alertname": "FairnessGapBreach", "exp_alerts": []}],
        },
        {   # Drift, invalid events, consumer lag, a stalled scorer.
            "interval": "1m",
            "input_series": [
                {"series": 'fairwatch_drift_events_total{model="credit",attribute="race",metric="selection_rate"}',
                 "values": "0 0 0 1 1 1 1 1 1 1 1 1"},
                {"series": 'fairwatch_events_total{status="valid"}', "values": "0+900x30"},
                {"series": 'fairwatch_events_total{status="invalid"}', "values": "0+100x30"},
                {"series": 'fairwatch_events_total{status="duplicate"}', "values": "0x30"},
                {"series": 'fairwatch_consumer_lag{topic="fairwatch.predictions",partition="0"}', "values": "250000x30"},
                {"series": "fairwatch_scorer_texts_total", "values": "5x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "FairnessDriftDetected", "exp_alerts": [
                    {"exp_labels": {"severity": "ticket", "model": "credit", "attribute": "race",
                                    "metric": "selection_rate"},
                     "exp_annotations": _annotations(
                         "FairnessDriftDetected", "credit: selection_rate on race changed (1 drift changes in 30m)",
                         model="credit", attribute="race")},
                ]},
                {"eval_time": "20m", "alertname": "FairwatchInvalidEvents", "exp_alerts": [
                    {"exp_labels": {"severity": "ticket", "model": "all", "attribute": "all",
                                    "metric": "invalid_event_rate"},
                     "exp_annotations": _annotations("FairwatchInvalidEvents", "10% of input events are invalid")},
                ]},
                {"eval_time": "20m", "alertname": "FairwatchConsumerLag", "exp_alerts": [
                    {"exp_labels": {"severity": "ticket", "model": "all", "attribute": "all",
                                    "metric": "consumer_lag", "topic": "fairwatch.predictions"},
                     "exp_annotations": _annotations("FairwatchConsumerLag",
                                                     "fairwatch is 250000 events behind on fairwatch.predictions")},
                ]},
                {"eval_time": "25m", "alertname": "FairwatchScorerFailing", "exp_alerts": [
                    {"exp_labels": {"severity": "ticket", "model": "all", "attribute": "all", "metric": "scorer"},
                     "exp_annotations": _annotations(
                         "FairwatchScorerFailing", "the counterfactual scorer has scored nothing for 10m while events flow")},
                ]},
                {"eval_time": "25m", "alertname": "FairwatchNoEvents", "exp_alerts": []},
            ],
        },
        {   # An LLM refuses women more often: the core's generation decision says breach (anytime-valid), and
            # the same FairnessGapBreach pages on it; a display interval beyond the threshold alone pages nobody.
            "interval": "1m",
            "input_series": [
                {"series": f'fairwatch_decision_breach{{{GENERATION_SELECTOR},instance="w1"}}', "values": "0 0 1x12"},
                {"series": f'fairwatch_decision_bound{{{GENERATION_SELECTOR},instance="w1"}}',
                 "values": "0.05 0.05 0.183x12"},
                {"series": f'fairwatch_decision_threshold{{{GENERATION_SELECTOR},instance="w1"}}', "values": "0.1x14"},
                {"series": 'fairwatch_generation_gap_lower{model="chat",attribute="age",metric="refusal_rate_difference",'
                           'window="last_3600s",instance="w1"}', "values": "0.3x14"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "FairnessGapBreach", "exp_alerts": []},
                {"eval_time": "8m", "alertname": "FairnessGapBreach", "exp_alerts": [
                    {"exp_labels": {"severity": "page", "model": "chat", "attribute": "sex",
                                    "metric": "refusal_rate_difference"},
                     "exp_annotations": _annotations(
                         "FairnessGapBreach", "chat: refusal_rate_difference on sex is beyond its threshold "
                         "(anytime-valid bound 0.183 vs threshold 0.100)", model="chat", attribute="sex")},
                ]},
            ],
        },
        {   # Nothing arrives at all.
            "interval": "1m",
            "input_series": [{"series": 'fairwatch_events_total{status="valid"}', "values": "7x30"}],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "FairwatchNoEvents", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "FairwatchNoEvents", "exp_alerts": [
                    {"exp_labels": {"severity": "page", "model": "all", "attribute": "all", "metric": "events"},
                     "exp_annotations": _annotations("FairwatchNoEvents", "fairwatch has applied no valid event for 10m")},
                ]},
            ],
        },
    ]


def test_promtool_unit_tests(promtool, tmp_path):
    shutil.copy(RULES, tmp_path / RULES.name)
    spec = {"rule_files": [RULES.name], "evaluation_interval": "1m", "tests": unit_tests()}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


ALERTMANAGER = RULES.parents[1] / "alertmanager.yml"


@pytest.mark.parametrize(
    "labels, receivers",
    [
        # alertmanager-ui: the receiver without an integration that users plug theirs into.
        (["alertname=FairnessGapBreach", "severity=page", "model=m", "attribute=race"],
         "fairwatch-trigger,alertmanager-ui"),
        (["alertname=FairwatchNoEvents", "severity=page"], "alertmanager-ui"),
        (["alertname=FairnessDriftDetected", "severity=ticket"], "alertmanager-ui"),
    ],
)
def test_alertmanager_routes_breaches_to_the_trigger(labels, receivers):
    amtool = shutil.which("amtool")
    assert amtool, "amtool not found: `make test` installs Debian's prometheus-alertmanager package"
    check = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    route = subprocess.run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels],
                           capture_output=True, text=True)
    assert route.returncode == 0, route.stderr
    assert route.stdout.strip() == receivers
