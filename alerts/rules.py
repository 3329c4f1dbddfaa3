"""Prometheus recording and alerting rules, rendered from the metric names and the config.

The breach decision is made by the core (anytime-valid, family-wise bounds;
``monitor.breach``) and exported as ``fairwatch_decision_breach``; the
alerting rules here only route it, add a duration and say what it means.
Recording rules give the global per-group rates and gaps from the counters
summed over all workers, over 5m, 1h and 24h, for dashboards and tickets
(fixed-window point estimates: they inform, they do not page).

``fairwatch rules render`` writes ``alerts/rules/fairwatch.rules.yml``; a
test checks that the committed file is what the code renders, so a renamed
metric cannot leave a dead rule behind.
"""

from __future__ import annotations

import re
from typing import ClassVar

import msgspec
import yaml

from fairwatch.consumers import metric_names as consumer_names
from fairwatch.monitor import metric_names as names
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.scorer import metric_names as scorer_names
from fairwatch.monitor.scorer.shadow import BASELINE_SUFFIX, CANDIDATE_SUFFIX

WINDOWS = ("5m", "1h", "24h")
# Prometheus' duration syntax (model.ParseDuration): units from largest to smallest, each at most once.
PROMETHEUS_DURATION = re.compile(r"(?=\d)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
DURATION_KEYS = ("breach_for", "drift_window", "no_events_for")
RANGE_KEYS = ("drift_window", "no_events_for")  # used as range selectors too: must not be zero
# Keys of [alerts] that moved elsewhere, and where to.
MOVED_KEYS = {"refusal_gap": "LLM refusal gaps are breach decisions now (FairnessGapBreach); set their threshold as "
                             "[thresholds] refusal_rate_difference"}


def moved_key(table: dict) -> str | None:
    """Where a key of ``table`` that moved out of [alerts] went, or None."""
    return next((f"{key} is gone: {where}" for key, where in MOVED_KEYS.items() if key in table), None)


BY_GROUP = "model, attribute, group"
BY_ATTRIBUTE = "model, attribute"


class AlertSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Routing knobs of the alert rules, the dashboards' alerting and the trigger: the ``[alerts]`` table."""

    runbook_url: str = "https://github.com/fairwatch/fairwatch/blob/main/docs/runbook.md"
    dashboard_url: str = "http://localhost:3000/d/fairwatch-model"
    breach_for: str = "5m"
    drift_window: str = "30m"
    no_events_for: str = "10m"
    invalid_ratio: float = 0.01
    consumer_lag_events: int = 100_000

    FIELD_HELP: ClassVar[dict[str, str]] = {
        "runbook_url": "runbook page linked from every alert and incident",
        "dashboard_url": "model dashboard linked from every alert and incident",
        "breach_for": "a breach decision must hold this long before FairnessGapBreach fires (a Prometheus duration)",
        "drift_window": "range over which a drift detection raises FairnessDriftDetected",
        "no_events_for": "no valid event applied (by any worker) for this long raises FairwatchNoEvents",
        "invalid_ratio": "share of refused events above which FairwatchInvalidEvents fires",
        "consumer_lag_events": "consumer lag, in records, above which FairwatchConsumerLag fires",
    }

    def __post_init__(self) -> None:
        for key in DURATION_KEYS:
            value = getattr(self, key)
            if not isinstance(value, str) or not PROMETHEUS_DURATION.fullmatch(value):
                raise ValueError(f"{key} = {value!r} is not a Prometheus duration "
                                 "(e.g. \"5m\", \"1h30m\", \"90s\"; units y w d h m s ms)")
            if key in RANGE_KEYS and not any(c != "0" for c in value if c.isdigit()):
                raise ValueError(f"{key} must be longer than zero, got {value!r}")
        if not 0 < self.invalid_ratio < 1:  # also refuses NaN; -1 or 7 would make the alert fire always or never
            raise ValueError(f"invalid_ratio must lie between 0 and 1 (exclusive), got {self.invalid_ratio}")
        if self.consumer_lag_events < 1:
            raise ValueError(f"consumer_lag_events must be at least 1, got {self.consumer_lag_events}")


def parse_alert_settings(data: dict) -> AlertSettings:
    """The ``[alerts]`` table; every problem a one-line ConfigError.

    >>> parse_alert_settings({"breach_for": "10m"}).breach_for
    '10m'
    >>> parse_alert_settings({"breach_for": "soon"})
    Traceback (most recent call last):
    ...
    fairwatch.monitor.config.ConfigError: [alerts]: breach_for = 'soon' is not a Prometheus duration (e.g. "5m", "1h30m", "90s"; units y w d h m s ms)
    """
    from fairwatch.monitor.config import ConfigError

    moved = moved_key(data)
    if moved:
        raise ConfigError(f"[alerts]: {moved}")
    try:
        return msgspec.convert(data, AlertSettings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"[alerts]: {exc}") from None


def _cell(cell: str, window: str) -> str:
    return f'sum by ({BY_GROUP}) (increase({names.GROUP_EVENTS}{{cell="{cell}"}}[{window}]))'


def recording_rules(min_group_size: int, privacy_floor: int) -> list[dict]:
    rules: list[dict] = []
    ratios = {
        "selection_rate": ("positives", ("predictions",)),
        "tpr": ("tp", ("tp", "fn")),
        "fpr": ("fp", ("fp", "tn")),
    }
    for window in WINDOWS:
        predictions = f"fairwatch:group_predictions:{window}"
        rules.append({"record": predictions, "expr": _cell("predictions", window)})
        for rate, (numerator, denominator) in ratios.items():
            below = " + ".join(_cell(c, window) for c in denominator)
            rules.append({
                "record": f"fairwatch:group_{rate}:{window}",
                # Groups under the minimum size are left out, as in the core, and so is
                # a rate whose own denominator (labelled positives for TPR, labelled
                # negatives for FPR) is under the privacy floor: an FPR from 2 labels
                # would tell who the 2 are.
                "expr": f"({_cell(numerator, window)}) / ({below}) "
                        f"and on ({BY_GROUP}) ({below}) >= {privacy_floor} "
                        f"and on ({BY_GROUP}) {predictions} >= {min_group_size}",
            })
        for gap, rate in (("demographic_parity_difference", "selection_rate"),
                          ("false_positive_rate_difference", "fpr"),
                          ("equal_opportunity_difference", "tpr")):
            series = f"fairwatch:group_{rate}:{window}"
            rules.append({
                "record": f"fairwatch:{gap}:{window}",
                # A gap needs two groups: one group left after the floor is no evidence of parity.
                "expr": f"max by ({BY_ATTRIBUTE}) ({series}) - min by ({BY_ATTRIBUTE}) ({series}) "
                        f"and on ({BY_ATTRIBUTE}) count by ({BY_ATTRIBUTE}) ({series}) >= 2",
            })
        rules.append({
            "record": f"fairwatch:demographic_parity_ratio:{window}",
            "expr": f"min by ({BY_ATTRIBUTE}) (fairwatch:group_selection_rate:{window}) "
                    f"/ max by ({BY_ATTRIBUTE}) (fairwatch:group_selection_rate:{window})",
        })
    # With several workers, any worker's breach counts (each decides at
    # family_error / workers): the max over workers is the decision.
    by_metric = "model, attribute, metric"
    rules += [
        {"record": "fairwatch:decision_breach:max", "expr": f"max by ({by_metric}) ({names.DECISION_BREACH})"},
        {"record": "fairwatch:decision_bound:worst",
         "expr": f'max by ({by_metric}) ({names.DECISION_BOUND}{{metric!~".*ratio"}}) '
                 f'or min by ({by_metric}) ({names.DECISION_BOUND}{{metric=~".*ratio"}})'},
        {"record": "fairwatch:decision_threshold", "expr": f"max by ({by_metric}) ({names.DECISION_THRESHOLD})"},
    ]
    return rules


def query_value(expression: str) -> str:
    """A template that runs ``expression`` (with the alert's labels) and prints its value."""
    return ('{{ with printf `' + expression + '` $labels.model $labels.attribute $labels.metric | query }}'
            '{{ if . }}{{ . | first | value | printf "%.3f" }}{{ else }}?{{ end }}{{ end }}')


# What query_value writes, found again in a rendered annotation by whoever rewrites it for a templating
# without Prometheus' ``query`` (dashboards.alerting: Grafana): ``expr`` is the metric, selector left out.
QUERY_VALUE_TEMPLATE = re.compile(
    r"\{\{ with printf `(?P<expr>[^`{]+)(?:\{[^`]*\})?`[^}]*\| query \}\}.*?\{\{ end \}\}\{\{ end \}\}")


def alerting_rules(settings: AlertSettings) -> list[dict]:
    def runbook(alert: str) -> str:
        return f"{settings.runbook_url}#runbook-{alert.lower()}"

    selector = '{model="%s",attribute="%s",metric="%s"}'
    bound = query_value("fairwatch:decision_bound:worst" + selector)
    threshold = query_value("fairwatch:decision_threshold" + selector)
    dashboard = settings.dashboard_url + "?var-model={{ $labels.model }}&var-attribute={{ $labels.attribute }}"
    return [
        {
            "alert": "FairnessGapBreach",
            # A shadow's models (<model>:baseline, <model>:candidate) are compared in their incident, never
            # paged on: the baseline repeats production's breach, and a candidate serves no one yet.
            "expr": f'fairwatch:decision_breach:max{{model!~".+({BASELINE_SUFFIX}|{CANDIDATE_SUFFIX})"}} == 1',
            "for": settings.breach_for,
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "{{ $labels.model }}: {{ $labels.metric }} on {{ $labels.attribute }} is beyond its "
                           f"threshold (anytime-valid bound {bound} vs threshold {threshold})",
                "description": "The gap's anytime-valid, family-wise corrected bound has been beyond the threshold "
                               f"for {settings.breach_for}: this is not noise at the configured family error.",
                "runbook_url": runbook("FairnessGapBreach"),
                "dashboard_url": dashboard,
            },
        },
        {
            "alert": "FairnessDriftDetected",
            "expr": f"sum by (model, attribute, metric) (increase({names.DRIFT_EVENTS}[{settings.drift_window}])) > 0",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "{{ $labels.model }}: {{ $labels.metric }} on {{ $labels.attribute }} changed "
                           f"({{{{ $value }}}} drift changes in {settings.drift_window})",
                "description": "A drift detector saw a group's selection rate or a gap move. Not a breach by "
                               "itself: check whether the gap is heading for its threshold.",
                "runbook_url": runbook("FairnessDriftDetected"),
                "dashboard_url": dashboard,
            },
        },
        {
            "alert": "FairwatchNoEvents",
            "expr": f'sum(rate({names.EVENTS}{{status="valid"}}[{settings.no_events_for}])) == 0 '
                    f"or absent({names.EVENTS})",
            "for": settings.no_events_for,
            "labels": {"severity": "page", "model": "all", "attribute": "all", "metric": "events"},
            "annotations": {
                "summary": f"fairwatch has applied no valid event for {settings.no_events_for}",
                "description": "Either the model stopped emitting, the worker stopped consuming, or every event "
                               "is invalid. Fairness is not being watched meanwhile.",
                "runbook_url": runbook("FairwatchNoEvents"),
                "dashboard_url": settings.dashboard_url,
            },
        },
        {
            "alert": "FairwatchInvalidEvents",
            "expr": f'sum(rate({names.EVENTS}{{status="invalid"}}[5m])) / sum(rate({names.EVENTS}[5m])) '
                    f"> {settings.invalid_ratio}",
            "for": "10m",
            "labels": {"severity": "ticket", "model": "all", "attribute": "all", "metric": "invalid_event_rate"},
            "annotations": {
                "summary": "{{ $value | humanizePercentage }} of input events are invalid",
                "description": f"More than {settings.invalid_ratio:.0%} of events fail validation: see "
                               f"{names.INVALID_EVENTS} by reason and the dead-letter topic.",
                "runbook_url": runbook("FairwatchInvalidEvents"),
                "dashboard_url": settings.dashboard_url,
            },
        },
        {
            "alert": "FairwatchConsumerLag",
            "expr": f"sum by (topic) ({consumer_names.CONSUMER_LAG}) > {settings.consumer_lag_events}",
            "for": "10m",
            "labels": {"severity": "ticket", "model": "all", "attribute": "all", "metric": "consumer_lag"},
            "annotations": {
                "summary": "fairwatch is {{ $value }} events behind on {{ $labels.topic }}",
                "description": "The workers are not keeping up: decisions are late by the lag. Add workers "
                               "(up to the partition count) or check the scorer.",
                "runbook_url": runbook("FairwatchConsumerLag"),
                "dashboard_url": settings.dashboard_url,
            },
        },
        {
            "alert": "FairwatchScorerFailing",
            "expr": f"sum(rate({scorer_names.SCORER_TEXTS}[10m])) == 0 "
                    f'and on () sum(rate({names.EVENTS}{{status="valid"}}[10m])) > 0',
            "for": "10m",
            "labels": {"severity": "ticket", "model": "all", "attribute": "all", "metric": "scorer"},
            "annotations": {
                "summary": "the counterfactual scorer has scored nothing for 10m while events flow",
                "description": "Debiased outputs and counterfactual evidence are stale. Check the GPU, the model "
                               "directory and the worker's log.",
                "runbook_url": runbook("FairwatchScorerFailing"),
                "dashboard_url": settings.dashboard_url,
            },
        },
    ]


def render(config: MonitorConfig | None = None, settings: AlertSettings | None = None) -> str:
    config = config or MonitorConfig()
    settings = settings or AlertSettings()
    document = {
        "groups": [
            {"name": "fairwatch-recording", "interval": "30s", "rules": recording_rules(config.min_group_size,
                                                                                 config.privacy_floor)},
            {"name": "fairwatch-alerts", "rules": alerting_rules(settings)},
        ]
    }
    header = "# Rendered by `fairwatch rules render` from monitor/metric_names.py; do not edit by hand.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)
