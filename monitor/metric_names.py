"""Every Prometheus metric and label name the core exports, defined once.

Rules, dashboards and tests import these names; nothing else spells them.
The adapters' own series are named beside them, from the labels here:
``consumers.metric_names`` (the Kafka worker, the outcome join),
``alerts.metric_names`` (the trigger), ``monitor.scorer.metric_names``.
"""

from __future__ import annotations

# --- label names -----------------------------------------------------------
MODEL = "model"
ATTRIBUTE = "attribute"
GROUP = "group"
CELL = "cell"
METRIC = "metric"
WINDOW = "window"
STATUS = "status"
REASON = "reason"
KIND = "kind"

# --- mergeable counters: sum over workers in PromQL ------------------------
# One series per (model, attribute, group, cell); cells are COUNTER_CELLS.
GROUP_EVENTS = "fairwatch_group_events_total"
GROUP_SCORE_SUM = "fairwatch_group_score_sum_total"
COUNTER_CELLS = ("predictions", "positives", "scored", "labeled", "tp", "fp", "tn", "fn")

# --- gauges: what this worker sees -----------------------------------------
GROUP_RATE = "fairwatch_group_rate"
GROUP_RATE_LOWER = "fairwatch_group_rate_lower"
GROUP_RATE_UPPER = "fairwatch_group_rate_upper"
GROUP_WINDOW_EVENTS = "fairwatch_group_window_events"
GAP = "fairwatch_gap"
GAP_LOWER = "fairwatch_gap_lower"
GAP_UPPER = "fairwatch_gap_upper"

# --- breach decisions (anytime-valid, family-wise; monitor.breach) ----------
# Per (model, attribute, metric): the bound the decision compared with the
# threshold (difference: best pair lower bound; ratio: best pair upper bound),
# the threshold, and the decision (1 = breached). Subgroup-search metrics
# (subgroup_<rate>_difference) carry the worst cell of the attribute.
DECISION_BOUND = "fairwatch_decision_bound"
DECISION_THRESHOLD = "fairwatch_decision_threshold"
DECISION_BREACH = "fairwatch_decision_breach"
BREACH_ONSETS = "fairwatch_breach_onsets_total"

# --- before labels: per-group estimates from calibrated scores --------------
GROUP_ESTIMATED_RATE = "fairwatch_group_estimated_rate"
GROUP_ESTIMATED_RATE_LOWER = "fairwatch_group_estimated_rate_lower"
GROUP_ESTIMATED_RATE_UPPER = "fairwatch_group_estimated_rate_upper"
GROUP_UNLABELED = "fairwatch_group_unlabeled_predictions"
GROUP_LABEL_DELAY = "fairwatch_group_label_delay_seconds"
GROUP_CALIBRATION_ERROR = "fairwatch_group_calibration_error"
# 1: recent labels agree with the calibration behind the estimates; 0: they
# do not (calibration drift: the group's estimated rates are withheld).
ESTIMATE_RELIABILITY = "fairwatch_estimate_reliability"

# --- score AUCs per group (Borkan et al. 2019; monitor.score_auc) ------------
# Per (model, attribute, group, metric in AUC_METRICS), since start, as this
# worker sees it; the histograms behind them add across workers.
GROUP_SCORE_AUC = "fairwatch_group_score_auc"
GROUP_SCORE_AUC_LOWER = "fairwatch_group_score_auc_lower"
GROUP_SCORE_AUC_UPPER = "fairwatch_group_score_auc_upper"
AUC_METRICS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")

# --- generations: LLM responses scored per group (monitor.generation) ---------
# Counters since start, per (model, attribute, group, cell in GENERATION_CELLS): sum them over workers.
GENERATION_RESPONSES = "fairwatch_generation_responses_total"
GENERATION_CELLS = ("responses", "refusals", "negative", "classified", "toxic")  # the last two: --response-model
# Gauges per (model, attribute, group, metric in GENERATION_RATE_METRICS, window), with 95% bounds
# (Wilson for the two proportions, normal for the mean), for groups at or above the privacy floor.
GENERATION_GROUP_RATE = "fairwatch_generation_group_rate"
GENERATION_GROUP_RATE_LOWER = "fairwatch_generation_group_rate_lower"
GENERATION_GROUP_RATE_UPPER = "fairwatch_generation_group_rate_upper"
GENERATION_RATE_METRICS = ("refusal_rate", "negative_share", "mean_sentiment", "toxic_share")
GENERATION_GROUP_WINDOW_RESPONSES = "fairwatch_generation_group_window_responses"
# Per (model, attribute, group, window): Wasserstein-1 between the group's sentiment distribution and the rest's.
GENERATION_SENTIMENT_DISTANCE = "fairwatch_generation_sentiment_distance"
# Per (model, attribute, metric in GENERATION_GAP_METRICS, window), over groups >= min_group_size responses.
GENERATION_GAP = "fairwatch_generation_gap"
GENERATION_GAP_LOWER = "fairwatch_generation_gap_lower"
GENERATION_GAP_UPPER = "fairwatch_generation_gap_upper"
GENERATION_GAP_METRICS = (
    "refusal_rate_difference",
    "negative_share_difference",
    "mean_sentiment_difference",
    "sentiment_wasserstein_max",  # the largest W1 between two groups' sentiment distributions
    "toxic_share_difference",  # with a response classifier (--response-model)
)
# Generation fractions with an anytime-valid breach decision (monitor.generation.decisions), exported as the
# `metric` of DECISION_BOUND / DECISION_THRESHOLD / DECISION_BREACH / BREACH_ONSETS like the prediction gaps.
GENERATION_DECISION_METRICS = ("refusal_rate_difference", "negative_share_difference", "toxic_share_difference")

# --- drift ----------------------------------------------------------------
DRIFT_EVENTS = "fairwatch_drift_events_total"
DRIFT_LAST_TIMESTAMP = "fairwatch_drift_last_timestamp_seconds"

# --- pipeline health -------------------------------------------------------
EVENTS = "fairwatch_events_total"  # status: valid | invalid | duplicate
INVALID_EVENTS = "fairwatch_invalid_events_total"  # reason: one of REJECTION_REASONS
OUTCOMES = "fairwatch_outcomes_total"  # status: one of OUTCOME_STATUSES
BATCH_SECONDS = "fairwatch_batch_processing_seconds"
LAST_EVENT_TIMESTAMP = "fairwatch_last_event_timestamp_seconds"
OVER_CAPACITY = "fairwatch_over_capacity_total"  # kind: one of CAPACITY_KINDS
CAPACITY_KINDS = ("model", "attribute", "group_value")

EVENT_STATUSES = ("valid", "invalid", "duplicate")
# joined_from_copy: the prediction was not held here (another worker counted it before its partition
# moved, or it left the journal); the label was counted from the copy `fairwatch join` attached.
OUTCOME_STATUSES = ("joined", "joined_from_copy", "early", "duplicate", "conflicting", "orphaned")
# The statuses overlap: an `early` outcome is counted again when its prediction
# arrives (`joined`) or when it is dropped unjoined (`orphaned`). Labels applied
# = joined + joined_from_copy; outcomes still waiting = early - (those joined
# later) - orphaned; duplicate and conflicting never overlap the others.

# Bounded set of reasons, so the label cannot explode; the full human
# message goes to logs / the dead-letter header, never to a label.
REJECTION_REASONS = (
    "not_json",
    "missing_field",
    "wrong_type",
    "bad_value",
    "unknown_label",
    "oversized",
    "over_capacity",  # a new model past max_models
    "internal_error",  # an exception while handling this one record (a bug): the record is isolated
)

# Rates exported per group and gaps exported per attribute.
RATE_METRICS = (
    "selection_rate",
    "tpr",
    "fpr",
    "fnr",
    "tnr",
    "ppv",
    "fdr",
    "accuracy",
    "base_rate",
    "label_coverage",
    "mean_score",
)
GAP_METRICS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "false_positive_rate_difference",
    "false_negative_rate_difference",
    "false_discovery_rate_difference",
    "accuracy_difference",
    "fped",
    "fned",
)

OTHER_GROUP = "other"
SINCE_START_WINDOW = "all"


# --- the reference: what each metric is, for people -------------------------------
# (names, type, labels, meaning). The metric reference (docs/metrics.md) is generated from
# this, the scorer's and the adapters' (`python -m fairwatch.metric_reference --write docs/metrics.md`);
# a test checks that every name above is here and that the reference is current.
def listed(label: str, values: tuple[str, ...]) -> str:
    """A label and its bounded values, as the reference prints them: status (`a`, `b`)."""
    return f"{label} ({', '.join(f'`{v}`' for v in values)})"


REFERENCE: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (('fairwatch_group_events_total',), 'counter', 'model, attribute, group, cell',
     'cells `predictions`, `positives`, `scored`, `labeled`, `tp`, `fp`, `tn`, `fn`, since start: sum them over workers in PromQL'),
    (('fairwatch_group_score_sum_total',), 'counter', 'model, attribute, group',
     'sum of scores (mean = this / `scored`)'),
    (('fairwatch_group_rate', 'fairwatch_group_rate_lower', 'fairwatch_group_rate_upper'), 'gauge', 'model, attribute, group, metric, window',
     'per-group rate and its Wilson bounds'),
    (('fairwatch_group_window_events',), 'gauge', 'model, attribute, group, window',
     'predictions in the window'),
    (('fairwatch_gap', 'fairwatch_gap_lower', 'fairwatch_gap_upper'), 'gauge', 'model, attribute, metric, window',
     'gap over groups ≥ `min_group_size`, with its bounds'),
    ((GROUP_SCORE_AUC, GROUP_SCORE_AUC_LOWER, GROUP_SCORE_AUC_UPPER), 'gauge',
     'model, attribute, group, ' + listed(METRIC, AUC_METRICS),
     'since start, from the scores of labeled predictions: subgroup AUC (the group alone), BPSN (other groups\' '
     'positives against the group\'s negatives) and BNSP (the group\'s positives against other groups\' negatives), '
     'Borkan et al. 2019, with 95% Hanley-McNeil bounds; groups at or above the privacy floor with both labels'),
    ((GENERATION_RESPONSES,), 'counter', 'model, attribute, group, ' + listed(CELL, GENERATION_CELLS),
     'generation events (LLM responses) since start: all, refused (a refusal phrase found), negative (VADER '
     'compound <= -0.05); sum them over workers in PromQL'),
    ((GENERATION_GROUP_RATE, GENERATION_GROUP_RATE_LOWER, GENERATION_GROUP_RATE_UPPER), 'gauge',
     'model, attribute, group, ' + listed(METRIC, GENERATION_RATE_METRICS) + ', window',
     'per-group refusal rate and negative share (95% Wilson bounds) and mean VADER sentiment (95% normal bounds) '
     'of responses in the window'),
    ((GENERATION_GROUP_WINDOW_RESPONSES,), 'gauge', 'model, attribute, group, window', 'responses in the window'),
    ((GENERATION_SENTIMENT_DISTANCE,), 'gauge', 'model, attribute, group, window',
     "Wasserstein-1 between the group's and the rest's sentiment distributions (histograms of 0.01-wide bins on "
     "[-1, 1]: within 0.01 of the exact distance)"),
    ((GENERATION_GAP, GENERATION_GAP_LOWER, GENERATION_GAP_UPPER), 'gauge',
     'model, attribute, ' + listed(METRIC, GENERATION_GAP_METRICS) + ', window',
     'max - min over groups with >= `min_group_size` responses (Newcombe bounds for the proportions, Welch for '
     'the mean), and the largest Wasserstein-1 between two groups (bias-corrected bootstrap bounds); for display'),
    (('fairwatch_drift_events_total', 'fairwatch_drift_last_timestamp_seconds'), 'counter, gauge', 'model, attribute, metric, group',
     'drift changes (group: the group whose rate drifted, empty for a gap)'),
    (('fairwatch_events_total',), 'counter', listed(STATUS, EVENT_STATUSES),
     'input events'),
    (('fairwatch_invalid_events_total',), 'counter', 'reason',
     'invalid events by reason'),
    (('fairwatch_outcomes_total',), 'counter', listed(STATUS, OUTCOME_STATUSES),
     'outcome events (`joined_from_copy`: counted from the prediction copy `fairwatch join` attaches, '
     'the prediction being counted elsewhere). Statuses overlap: an `early` outcome counts again as `joined` '
     'or `orphaned`; labels applied = `joined` + `joined_from_copy`'),
    ((OVER_CAPACITY,), 'counter', listed(KIND, CAPACITY_KINDS),
     'what the memory caps turned away: predictions of models past `max_models` (refused, dead-lettered), attribute '
     'names past `max_attributes` (not tracked), group values past `max_group_values` (counted as `other`)'),
    (('fairwatch_batch_processing_seconds',), 'histogram', '',
     'time per batch'),
    (('fairwatch_last_event_timestamp_seconds',), 'gauge', 'model',
     'newest event time'),
    (('fairwatch_decision_bound', 'fairwatch_decision_threshold', 'fairwatch_decision_breach'), 'gauge', 'model, attribute, metric',
     "the anytime-valid bound a breach decision used, its threshold, and the decision (1 = breached); subgroup-search metrics carry the attribute's worst cell; the LLM generation fractions (" + ", ".join(GENERATION_DECISION_METRICS) + ") are decided and exported the same way"),
    (('fairwatch_breach_onsets_total',), 'counter', 'model, attribute, metric',
     'breaches declared'),
    (('fairwatch_group_estimated_rate', 'fairwatch_group_estimated_rate_lower', 'fairwatch_group_estimated_rate_upper'), 'gauge', 'model, attribute, group, metric',
     'TPR, FPR, FNR, PPV, accuracy of the unlabeled predictions, from per-group calibrated scores'),
    (('fairwatch_group_unlabeled_predictions',), 'gauge', 'model, attribute, group',
     'predictions still without a label'),
    (('fairwatch_group_label_delay_seconds',), 'gauge', 'model, attribute, group',
     'mean delay of late labels'),
    (('fairwatch_group_calibration_error',), 'gauge', 'model, attribute, group',
     'expected calibration error of the labeled predictions (scores in [0, 1])'),
    (('fairwatch_estimate_reliability',), 'gauge', 'model, attribute, group',
     "1 while the group's recent labels agree with the calibration its estimates use, 0 on calibration drift "
     '(its estimated rates are then withheld); absent with too few labels to say'),
)
