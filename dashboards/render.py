"""The fairwatch Grafana dashboards, rendered from the metric names of ``monitor``.

``fairwatch dashboards render`` writes ``dashboards/json/*.json`` (provisioned
by ``deploy/grafana/provisioning``) and the Grafana-managed alert rules; a
test checks the committed files equal this render, so a renamed metric cannot
leave a broken panel behind.

* overview (uid ``fairwatch-overview``): every model's decisions against
  their thresholds, input rate, invalid share, consumer lag, batch latency.
* model drill-down (uid ``fairwatch-model``, the ``dashboard_url`` of the
  alerts): gaps with their bands and thresholds, per-group rates, original vs
  debiased gaps, counterfactual flips and terms, drift as annotations, scorer.

No open-incidents panel: the incident store (alerts.incidents) exports no
metric, so there is nothing in Prometheus to chart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from fairwatch.dashboards.panels import (
    DATASOURCE,
    custom_variable,
    dashboard,
    datasource_variable,
    override_by_name,
    override_by_query,
    panel,
    query_variable,
    row,
    target,
)
from fairwatch.alerts import metric_names as alert_names
from fairwatch.consumers import metric_names as consumer_names
from fairwatch.monitor import metric_names as names
from fairwatch.monitor.scorer import metric_names as scorer_names

JSON_DIR = Path(__file__).parent / "json"
OVERVIEW_UID = "fairwatch-overview"
MODEL_UID = "fairwatch-model"
DECISION_KEY = "model, attribute, metric"
# The metrics a breach decision exists for (monitor.config.Thresholds).
DECISION_METRICS = ("demographic_parity_difference", "equalized_odds_difference", "demographic_parity_ratio")
DEBIASED_SUFFIX = ":debiased"  # monitor.scorer.step.DEBIASED_SUFFIX, spelled here so torch stays optional


def worst_bound(selector: str = "") -> str:
    """The worst decision bound over workers: largest for differences, smallest for ratios."""
    inner = selector + "," if selector else ""
    return (f'max by ({DECISION_KEY}) ({names.DECISION_BOUND}{{{inner}metric!~".*ratio"}}) '
            f'or min by ({DECISION_KEY}) ({names.DECISION_BOUND}{{{inner}metric=~".*ratio"}})')


def worst_gap(gauge: str, selector: str, by: str = names.METRIC) -> str:
    """A gap gauge over workers, the worse side of each: the largest difference, the smallest ratio.

    ``max`` alone would show the best worker's ratio (a ratio breaches below
    its threshold, 0.8 for the 4/5 rule).
    """
    return (f'max by ({by}) ({gauge}{{{selector},{names.METRIC}!~".*ratio"}}) '
            f'or min by ({by}) ({gauge}{{{selector},{names.METRIC}=~".*ratio"}})')


def rate_of(metric: str, selector: str = "", by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    selected = f"{metric}{{{selector}}}" if selector else metric
    return f"sum{grouping} (rate({selected}[$__rate_interval]))"


def quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[$__rate_interval])))"


def _to_model_link() -> list[dict]:
    return [{"title": "open ${__data.fields.model} / ${__data.fields.attribute}",
             "url": f"/d/{MODEL_UID}?var-model=${{__data.fields.model}}&var-attribute=${{__data.fields.attribute}}"
                    "&${datasource:queryparam}"}]


def bounds_over_time(kind: str, metric_match: str, worst: str, description: str, **options) -> dict:
    """The decision bounds of one kind of gap against their thresholds.

    Differences (thresholds near 0.1) and ratios (near 0.8) get a panel each:
    on one axis the 0.1 threshold and its bounds would be a flat line at the bottom.
    """
    selector = f"{{{names.METRIC}{metric_match}}}"
    return panel(
        "timeseries", f"Decision bounds over time: {kind}",
        [target(f"{worst} by ({DECISION_KEY}) ({names.DECISION_BOUND}{selector})",
                "{{model}} {{attribute}} {{metric}}", ref="BOUND"),
         target(f"max by ({DECISION_KEY}) ({names.DECISION_THRESHOLD}{selector})", "threshold {{metric}}",
                ref="THRESHOLD")],
        description=description,
        overrides=[override_by_query("THRESHOLD", **{"custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
                                                     "color": {"mode": "fixed", "fixedColor": "red"}})],
        **options,
    )


def overview() -> dict:
    """Every model at a glance: decisions first, then the health of the stream."""
    decisions_table = panel(
        "table", "Decisions: worst anytime-valid bound vs threshold",
        [target(worst_bound(), ref="BOUND", instant=True, table=True),
         target(f"max by ({DECISION_KEY}) ({names.DECISION_THRESHOLD})", ref="THRESHOLD", instant=True, table=True),
         target(f"max by ({DECISION_KEY}) ({names.DECISION_BREACH})", ref="BREACH", instant=True, table=True)],
        description="Per model, attribute and gap: the bound the breach decision compares with the threshold "
                    "(differences: lower bound, ratios: upper bound) and the decision (1 = breach). "
                    "A breach pages after 5 minutes (FairnessGapBreach).",
        width=24, height=9,
        transformations=[{"id": "merge", "options": {}},
                         {"id": "organize", "options": {
                             "excludeByName": {"Time": True},
                             "renameByName": {"Value #BOUND": "bound", "Value #THRESHOLD": "threshold",
                                              "Value #BREACH": "breach"}}}],
        overrides=[override_by_name("breach", **{
            "custom.cellOptions": {"type": "color-background"},
            "mappings": [{"type": "value", "options": {"0": {"text": "ok", "color": "green"},
                                                       "1": {"text": "BREACH", "color": "red"}}}]}),
                   override_by_name("model", links=_to_model_link())],
        field_defaults={"decimals": 3},
    )
    bounds_differences = bounds_over_time(
        "differences", '!~".*ratio"', "max",
        "Lower bounds of the differences; a breach when one rises above its threshold (dashed).")
    bounds_ratios = bounds_over_time(
        "ratios", '=~".*ratio"', "min",
        "Upper bounds of the ratios; a breach when one falls below its threshold (dashed, 0.8 for the 4/5 rule).",
        field_defaults={"min": 0, "max": 1})
    breaches = panel(
        "stat", "Breaches now",
        [target(f"count(max by ({DECISION_KEY}) ({names.DECISION_BREACH}) == 1) or vector(0)", "breaches",
                instant=True)],
        description="(model, attribute, gap) whose decision is breach on any worker: with several workers "
                    "each decides at its share of the family error, so any one breach counts.",
        width=8, height=6, options={"colorMode": "background", "reduceOptions": {"calcs": ["lastNotNull"]}},
        field_defaults={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                     {"color": "red", "value": 1}]}},
    )
    onsets = panel(
        "stat", "Breach onsets (24h)",
        [target(f"sum(increase({names.BREACH_ONSETS}[24h])) or vector(0)", "onsets", instant=True)],
        width=8, height=6, options={"reduceOptions": {"calcs": ["lastNotNull"]}},
    )
    open_incidents = panel(
        "stat", "Open incidents",
        [target(f'sum({alert_names.INCIDENTS}{{{alert_names.STATE}!="resolved"}}) or vector(0)', "open",
                instant=True)],
        description="Incidents the trigger has not seen resolved (`fairwatch incidents list`).",
        width=8, height=6, options={"colorMode": "background", "reduceOptions": {"calcs": ["lastNotNull"]}},
        field_defaults={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                     {"color": "orange", "value": 1}]}},
    )
    events = panel(
        "timeseries", "Events/s by status",
        [target(rate_of(names.EVENTS, by=names.STATUS), "{{status}}")], unit="reqps", width=8,
    )
    invalid_only = f'{names.STATUS}="invalid"'
    invalid = panel(
        "timeseries", "Invalid share and reasons",
        [target(f"{rate_of(names.EVENTS, invalid_only)} / {rate_of(names.EVENTS)}", "invalid share", ref="SHARE"),
         target(rate_of(names.INVALID_EVENTS, by=names.REASON), "{{reason}}/s", ref="REASONS")],
        description="FairwatchInvalidEvents tickets above 1% for 10 minutes.",
        unit="percentunit", width=8,
        overrides=[override_by_query("REASONS", unit="reqps", **{"custom.axisPlacement": "right"})],
    )
    lag = panel(
        "timeseries", "Consumer lag (Kafka worker)",
        [target(f"sum by ({consumer_names.TOPIC}) ({consumer_names.CONSUMER_LAG})", "{{topic}}")],
        description="Events behind the high watermark; FairwatchConsumerLag tickets above 100,000.",
        width=8,
    )
    latency = panel(
        "timeseries", "Batch processing latency",
        [target(quantile(0.5, names.BATCH_SECONDS), "p50", ref="P50"),
         target(quantile(0.99, names.BATCH_SECONDS), "p99", ref="P99")], unit="s", width=8,
    )
    freshness = panel(
        "timeseries", "Age of the newest event",
        [target(f"time() - max by ({names.MODEL}) ({names.LAST_EVENT_TIMESTAMP})", "{{model}}")],
        description="Event time, not arrival time: a replay of old data shows its age.", unit="s", width=8,
    )
    outcomes = panel(
        "timeseries", "Outcomes/s by status",
        [target(rate_of(names.OUTCOMES, by=names.STATUS), "{{status}}")], unit="reqps", width=8,
    )
    panels = [row("Decisions"), breaches, onsets, open_incidents, bounds_differences, bounds_ratios, decisions_table,
              row("Stream"), events, invalid, lag, latency, freshness, outcomes]
    return dashboard(OVERVIEW_UID, "fairwatch: overview",
                     "Every model's fairness decisions and the health of the stream (rendered by "
                     "`fairwatch dashboards render`; do not edit by hand).",
                     panels, [datasource_variable()],
                     links=[{"title": "Model drill-down", "type": "link", "url": f"/d/{MODEL_UID}"}])


def model_drilldown() -> dict:
    """One model and attribute in depth; the alerts link here with ``var-model`` and ``var-attribute``."""
    model = f'{names.MODEL}="$model"'
    key = f'{model},{names.ATTRIBUTE}="$attribute"'
    gap_key = f'{key},{names.METRIC}="$metric",{names.WINDOW}="$window"'
    band = {"custom.fillOpacity": 0, "custom.lineWidth": 0}
    gap = panel(
        "timeseries", "$metric on $attribute ($window) with its 95% interval and threshold",
        [target(worst_gap(names.GAP, gap_key), "gap", ref="GAP"),
         target(worst_gap(names.GAP_LOWER, gap_key), "lower", ref="LOWER"),
         target(worst_gap(names.GAP_UPPER, gap_key), "upper", ref="UPPER"),
         target(f'max({names.DECISION_THRESHOLD}{{{key},{names.METRIC}="$metric"}})', "threshold", ref="THRESHOLD"),
         # Only $metric's bound: another metric's (a ratio near 0.8) would squash this axis.
         target(worst_bound(f'{key},{names.METRIC}="$metric"'), "decision bound", ref="BOUND")],
        description="The band is the fixed-sample 95% interval (display). The decision bound is the "
                    "anytime-valid, family-wise one that pages; only the three decision metrics have one.",
        width=24, height=9,
        overrides=[override_by_name("upper", fillBelowTo="lower", **{**band, "custom.fillOpacity": 20}),
                   override_by_name("lower", **band),
                   override_by_name("threshold", color={"mode": "fixed", "fixedColor": "red"},
                                    **{"custom.lineStyle": {"fill": "dash", "dash": [10, 10]}})],
    )
    gaps_table = panel(
        "table", "Every gap on $attribute ($window)",
        [target(worst_gap(names.GAP, f'{key},{names.WINDOW}="$window"'), ref="GAP", instant=True, table=True),
         target(worst_gap(names.GAP_LOWER, f'{key},{names.WINDOW}="$window"'), ref="LOWER", instant=True,
                table=True),
         target(worst_gap(names.GAP_UPPER, f'{key},{names.WINDOW}="$window"'), ref="UPPER", instant=True,
                table=True)],
        transformations=[{"id": "merge", "options": {}},
                         {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {
                             "Value #GAP": "gap", "Value #LOWER": "lower", "Value #UPPER": "upper"}}}],
        field_defaults={"decimals": 3},
    )
    debiased = panel(
        "timeseries", "$metric: deployed model vs debiased outputs",
        [target(worst_gap(names.GAP, f'{names.MODEL}="$model",{names.ATTRIBUTE}="$attribute",'
                                     f'{names.METRIC}="$metric",{names.WINDOW}="$window"'), "$model", ref="ORIGINAL"),
         target(worst_gap(names.GAP, f'{names.MODEL}="$model{DEBIASED_SUFFIX}",{names.ATTRIBUTE}="$attribute",'
                                     f'{names.METRIC}="$metric",{names.WINDOW}="$window"'),
                f"$model{DEBIASED_SUFFIX}", ref="DEBIASED")],
        description="The debiased outputs (counterfactual-averaged scores) are tracked as the model "
                    "`<model>:debiased` when the scorer runs; empty without it.",
    )
    group_rates = panel(
        "timeseries", "$rate per group on $attribute ($window), dashed: 95% bounds",
        [target(f'max by ({names.GROUP}) ({names.GROUP_RATE}{{{key},{names.METRIC}="$rate",{names.WINDOW}="$window"}})',
                "{{group}}", ref="RATE"),
         target(f'max by ({names.GROUP}) ({names.GROUP_RATE_LOWER}{{{key},{names.METRIC}="$rate",'
                f'{names.WINDOW}="$window"}})', "{{group}} lower", ref="LOWER"),
         target(f'max by ({names.GROUP}) ({names.GROUP_RATE_UPPER}{{{key},{names.METRIC}="$rate",'
                f'{names.WINDOW}="$window"}})', "{{group}} upper", ref="UPPER")],
        unit="percentunit", width=12,
        overrides=[override_by_query(ref, **{"custom.lineStyle": {"fill": "dash", "dash": [4, 6]},
                                             "custom.lineWidth": 1}) for ref in ("LOWER", "UPPER")],
    )
    merged_rates = panel(
        "timeseries", "Selection rate per group, all workers (recording rule, 5m)",
        [target(f'fairwatch:group_selection_rate:5m{{{key}}}', "{{group}}")],
        description="From the summed counters (alerts/rules), so exact with several workers; groups under "
                    "min_group_size in the 5 minutes are left out.",
        unit="percentunit",
    )
    window_events = panel(
        "timeseries", "Predictions per group in $window",
        [target(f'max by ({names.GROUP}) ({names.GROUP_WINDOW_EVENTS}{{{key},{names.WINDOW}="$window"}})',
                "{{group}}")],
    )
    estimated = panel(
        "timeseries", "Before labels: estimated rates from calibrated scores",
        [target(f'max by ({names.GROUP}, {names.METRIC}) ({names.GROUP_ESTIMATED_RATE}{{{key}}})',
                "{{group}} {{metric}}", ref="ESTIMATE"),
         target(f'max by ({names.GROUP}) ({names.GROUP_UNLABELED}{{{key}}})', "{{group}} unlabeled",
                ref="UNLABELED")],
        unit="percentunit",
        overrides=[override_by_query("UNLABELED", unit="short", **{"custom.axisPlacement": "right"})],
    )
    generation_key = f'{key},{names.WINDOW}="$window"'
    dashed = [override_by_query(ref, **{"custom.lineStyle": {"fill": "dash", "dash": [4, 6]}, "custom.lineWidth": 1})
              for ref in ("LOWER", "UPPER")]

    def generation_rate(metric: str) -> list[dict]:
        selector = f'{{{generation_key},{names.METRIC}="{metric}"}}'
        return [target(f"max by ({names.GROUP}) ({family}{selector})", legend, ref=ref)
                for family, legend, ref in ((names.GENERATION_GROUP_RATE, "{{group}}", "RATE"),
                                            (names.GENERATION_GROUP_RATE_LOWER, "{{group}} lower", "LOWER"),
                                            (names.GENERATION_GROUP_RATE_UPPER, "{{group}} upper", "UPPER"))]

    refusals = panel(
        "timeseries", "Refusal rate per group on $attribute ($window), dashed: 95% bounds",
        generation_rate("refusal_rate"),
        description="Share of the model's responses (generation events) that contain a refusal phrase "
                    "(monitor/generation/refusal_phrases.txt); groups under the privacy floor are not exported.",
        unit="percentunit", width=12, overrides=dashed,
    )
    sentiment = panel(
        "timeseries", "Mean sentiment per group on $attribute ($window), dashed: 95% bounds",
        generation_rate("mean_sentiment"),
        description="VADER compound score of the responses, in [-1, 1] (negative below -0.05).",
        width=12, overrides=dashed,
    )
    toxic = panel(
        "timeseries", "Toxic share per group on $attribute ($window), dashed: 95% bounds",
        generation_rate("toxic_share"),
        description="Share of the responses whose chosen label's probability, by the response classifier the "
                    "worker runs (--response-model: toxicity, sentiment or regard), is at least "
                    "--response-threshold; empty without a classifier.",
        unit="percentunit", width=12, overrides=dashed,
    )
    generation_gaps = panel(
        "timeseries", "Generation gaps on $attribute ($window)",
        [target(f"max by ({names.METRIC}) ({names.GENERATION_GAP}{{{generation_key}}})", "{{metric}}", ref="GAP"),
         target(f"max by ({names.METRIC}) ({names.GENERATION_GAP_LOWER}{{{generation_key}}})",
                "{{metric}} lower", ref="LOWER")],
        description="Refusal-rate, negative-share, toxic-share and mean-sentiment differences (max - min over groups with at "
                    "least min_group_size responses) and the largest Wasserstein-1 distance between two groups' "
                    "sentiment distributions, with 95% lower bounds (display only: the decisions panel pages).",
        width=24, overrides=dashed[:1],
    )
    generation_selector = f'{key},{names.METRIC}=~"{"|".join(names.GENERATION_DECISION_METRICS)}"'
    generation_decisions = panel(
        "timeseries", "Generation decisions on $attribute: anytime-valid lower bounds vs thresholds",
        [target(f"max by ({names.METRIC}) ({names.DECISION_BOUND}{{{generation_selector}}})", "{{metric}} bound",
                ref="BOUND"),
         target(f"max by ({names.METRIC}) ({names.DECISION_THRESHOLD}{{{generation_selector}}})",
                "{{metric}} threshold", ref="THRESHOLD")],
        description="The breach decisions on the refused, negative and (with a response classifier) toxic "
                    "fractions: the lower bound of the largest group difference, family-wise and valid at every "
                    "moment; FairnessGapBreach pages when one stays above its threshold (dashed) for 5 minutes.",
        width=12,
        overrides=[override_by_query("THRESHOLD", **{"custom.lineStyle": {"fill": "dash", "dash": [10, 10]}})],
    )
    cf = f'{names.MODEL}="$model"'
    flip_rate = panel(
        "timeseries", "Counterfactual flip rate (all workers)",
        [target(f"sum by ({names.ATTRIBUTE}) ({scorer_names.COUNTERFACTUAL_FLIPPED}{{{cf}}}) / "
                f"sum by ({names.ATTRIBUTE}) ({scorer_names.COUNTERFACTUAL_TEXTS}{{{cf}}})", "{{attribute}}",
                ref="FLIPS"),
         target(f"max by ({names.ATTRIBUTE}, {scorer_names.STAT}) ({scorer_names.COUNTERFACTUAL_SCORE_CHANGE}{{{cf}}})",
                "{{attribute}} |Δscore| {{stat}}", ref="CHANGE")],
        description="Share of texts whose decision flips when group terms are swapped (lexicon attributes, "
                    "not the event's groups), and the score change it causes.",
        unit="percentunit",
    )
    top_terms = panel(
        "table", f"Top {scorer_names.TOP_TERMS} terms by score change",
        [target(f"topk({scorer_names.TOP_TERMS}, max by ({names.ATTRIBUTE}, {scorer_names.TERM}) "
                f"({scorer_names.COUNTERFACTUAL_TERM_SCORE_CHANGE}{{{cf}}}))", instant=True, table=True)],
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                        "renameByName": {"Value": "mean |Δscore|"}}},
                         {"id": "sortBy", "options": {"sort": [{"field": "mean |Δscore|", "desc": True}]}}],
        field_defaults={"decimals": 3},
    )
    throughput = panel(
        "timeseries", "Scorer throughput",
        [target(f"sum(rate({scorer_names.SCORER_TEXTS}[$__rate_interval]))", "texts/s", ref="TEXTS"),
         target(f"sum(rate({scorer_names.SCORER_SEQUENCES}[$__rate_interval]))", "sequences/s", ref="SEQUENCES")],
        unit="reqps",
    )
    scorer_latency = panel(
        "timeseries", "Scorer batch latency",
        [target(quantile(0.5, scorer_names.SCORER_BATCH_SECONDS), "p50", ref="P50"),
         target(quantile(0.99, scorer_names.SCORER_BATCH_SECONDS), "p99", ref="P99")], unit="s",
    )
    drift = {
        "name": "Drift", "enable": True, "iconColor": "orange", "datasource": DATASOURCE,
        # The counter moves only while Prometheus watches; the last drift time is a gauge, so the
        # annotation sits at the event time of the latest change of each (attribute, metric).
        "expr": f'max by ({names.ATTRIBUTE}, {names.METRIC}) ({names.DRIFT_LAST_TIMESTAMP}{{{model}}}) * 1000',
        "useValueForTime": True, "step": "60s",
        "titleFormat": "drift: {{metric}} on {{attribute}}", "tagKeys": "attribute,metric", "textFormat": "",
    }
    variables = [
        datasource_variable(),
        query_variable("model", "model", f"label_values({names.GROUP_EVENTS}, {names.MODEL})"),
        query_variable("attribute", "attribute",
                       f'label_values({names.GROUP_EVENTS}{{{names.MODEL}="$model"}}, {names.ATTRIBUTE})'),
        query_variable("window", "window", f'label_values({names.GAP}{{{names.MODEL}="$model"}}, {names.WINDOW})',
                       default=names.SINCE_START_WINDOW),
        custom_variable("metric", "gap", names.GAP_METRICS, DECISION_METRICS[0]),
        custom_variable("rate", "rate", names.RATE_METRICS, names.RATE_METRICS[0]),
    ]
    panels = [row("Gap"), gap, gaps_table, debiased,
              row("Groups"), group_rates, merged_rates, window_events, estimated,
              row("Generations (LLM responses)"), refusals, sentiment, toxic, generation_decisions, generation_gaps,
              row("Counterfactuals and scorer"), flip_rate, top_terms, throughput, scorer_latency]
    return dashboard(MODEL_UID, "fairwatch: model",
                     "One model and attribute: gaps with intervals and thresholds, groups, debiased outputs, "
                     "counterfactuals (rendered by `fairwatch dashboards render`; do not edit by hand).",
                     panels, variables, annotations=[drift],
                     links=[{"title": "Overview", "type": "link", "url": f"/d/{OVERVIEW_UID}"}])


def dashboards() -> dict[str, dict]:
    """File name -> dashboard JSON model."""
    return {"fairwatch-overview.json": overview(), "fairwatch-model.json": model_drilldown()}


def to_text(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def queries(document: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query a dashboard runs: panel targets, variables, annotations."""
    for item in document["panels"]:
        for t in item.get("targets", []):
            yield f'{document["uid"]} / {item["title"]} / {t["refId"]}', t["expr"]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            yield f'{document["uid"]} / variable {variable["name"]}', variable["query"]["query"]
    for annotation in document["annotations"]["list"]:
        if "expr" in annotation:
            yield f'{document["uid"]} / annotation {annotation["name"]}', annotation["expr"]


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in dashboards().items():
        path = directory / name
        path.write_text(to_text(document))
        written.append(path)
    return written


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def instantiate(expr: str, variables: dict[str, str], rate_interval: str = "1m", interval: str = "15s") -> str:
    """A dashboard query as Prometheus runs it: variables and Grafana's interval macros filled in.

    ``label_values(selector, label)`` (Grafana's variable function) becomes
    ``count by (label) (selector)``, the PromQL that lists the same values.
    """
    match = _LABEL_VALUES.match(expr.strip())
    if match:
        selector = match["selector"] or '{__name__=~".+"}'
        expr = f'count by ({match["label"]}) ({selector})'
    for macro, value in (("$__rate_interval", rate_interval), ("$__interval", interval), ("$__range", "1h")):
        expr = expr.replace(macro, value)
    # Longest names first, so $model is not replaced inside $models.
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def variable_names(document: dict) -> set[str]:
    return {v["name"] for v in document["templating"]["list"]}
