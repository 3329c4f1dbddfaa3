"""Anytime-valid breach decisions on the fractions of LLM generations (refused, negative, toxic).

Each fraction is a binomial rate per group (responses, and among them the
refused / negative / toxic ones), exactly like a prediction's selection
rate, so its decision is the prediction decision's: the same
``BreachMonitor`` (confidence sequences over since-start and restarting
blocks, Bonferroni over pairs of group slots), run on the generation counts.
One ``BreachMonitor`` per model serves every fraction: each (fraction,
attribute) is one of its attributes, named by the generation decision's own
key (``DecisionKey("sex", "refusal_rate_difference")``), and counts the
fraction as the selection-rate column, so the family-wise error is split
over the fractions and the attributes. Its decision on
``demographic_parity_difference`` of that carrier attribute is the decision
on ``refusal_rate_difference`` of ``sex``; its other gaps
(ratio, equalized odds) take no part (the ratio's threshold is 0, which no
bound can fall below, and no generation has a label).

Generation decisions are a family of their own: their error is at most
``family_error`` over the whole stream, beside the prediction decisions'
``family_error`` (so at most twice it over both, per model and worker).

>>> thresholds = lambda attribute, metric: 0.1
>>> decisions = GenerationDecisions("chat", thresholds=thresholds, attribute_budget=1, check_events=500)
>>> rng = np.random.default_rng(0)
>>> sex = rng.integers(0, 2, 4000)
>>> refused = rng.random(4000) < np.where(sex == 0, 0.4, 0.1)
>>> negative = rng.random(4000) < 0.3
>>> onsets = decisions.observe({"sex": sex}, {"refusal_rate_difference": refused,
...                            "negative_share_difference": negative}, {"sex": ["F", "M"]}, position=3999)
>>> [(o.attribute, o.metric, o.groups) for o in onsets]
[('sex', 'refusal_rate_difference', ['F', 'M'])]
>>> decisions.states[("sex", "negative_share_difference")].breached
False
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from fairwatch.monitor.breach import BreachMonitor, DecisionState, Onset, observation_rows
from fairwatch.monitor.decision_key import DecisionKey
from fairwatch.monitor.metric_names import GENERATION_DECISION_METRICS

__all__ = ["GENERATION_DECISION_METRICS", "GenerationDecisions"]

# Decided fractions (GENERATION_DECISION_METRICS): refused responses, negative ones (VADER), toxic ones (the
# response classifier, if any).
# The BreachMonitor gap that carries a generation fraction's difference (its selection-rate column).
_CARRIER = "demographic_parity_difference"


class _CarriedThresholds:
    """``(carrier attribute, carrier metric) -> threshold``, where the carrier attribute is the generation
    decision's ``DecisionKey``: the generation metric's threshold for the
    difference, and thresholds no bound can breach for the carrier's other gaps. A class, not a closure,
    so that a pipeline's state pickles."""

    def __init__(self, thresholds) -> None:
        self.thresholds = thresholds

    def __call__(self, carrier: DecisionKey, metric: str) -> float:
        if metric.endswith("ratio"):
            return 0.0  # a ratio breaches below its threshold, and no ratio bound is below 0
        if metric == _CARRIER:
            return self.thresholds(carrier.attribute, carrier.metric)
        return math.inf  # equalized odds: generations carry no labels


def _typed_carrier(attribute: DecisionKey | str) -> DecisionKey:
    """A carrier attribute as pickled before typed keys, ``"<metric>@<attribute>"``, as its ``DecisionKey``."""
    if isinstance(attribute, DecisionKey):
        return attribute
    metric, _, real = attribute.partition("@")
    return DecisionKey(real, metric)


class GenerationDecisions:
    """Breach decisions on a model's generation fractions; ``thresholds(attribute, metric)`` gives each
    metric of ``metrics``'s threshold; the other keyword arguments are ``BreachMonitor``'s."""

    def __init__(self, model: str, *, thresholds, attribute_budget: int,
                 metrics: tuple[str, ...] = GENERATION_DECISION_METRICS[:2], **breach_kwargs) -> None:
        unknown = [m for m in metrics if m not in GENERATION_DECISION_METRICS]
        if unknown:
            raise ValueError(f"unknown generation decision metrics {unknown}; known: {GENERATION_DECISION_METRICS}")
        self.metrics = tuple(metrics)
        self.monitor = BreachMonitor(model, thresholds=_CarriedThresholds(thresholds),
                                     attribute_budget=max(attribute_budget, 1) * len(self.metrics), **breach_kwargs)

    def observe(self, codes: dict[str, np.ndarray], flags: dict[str, np.ndarray], group_names: dict[str, list[str]],
                position: int, now: float | None = None) -> list[Onset]:
        """One batch of scored generations: group codes per attribute (-1: not counted), and per decided
        metric a boolean per generation (refused, negative, toxic); metrics missing from ``flags`` are not
        counted (e.g. no response classifier). Returns the breaches declared now, in generation terms."""
        n = len(next(iter(flags.values()))) if flags else 0
        if n == 0:
            return []
        no_label = np.full(n, -1, dtype=np.int64)
        delta, names = {}, {}
        for metric in self.metrics:
            flag = flags.get(metric)
            if flag is None:
                continue
            flag = np.asarray(flag, dtype=np.int64)
            for attribute, column in codes.items():
                carrier = DecisionKey(attribute, metric)
                names[carrier] = group_names[attribute]
                delta[carrier] = observation_rows(np.asarray(column, dtype=np.int64), flag, no_label,
                                                  len(group_names[attribute]))
        onsets = self.monitor.observe_counts(delta, n, names, position, now)
        return [self._translated(o) for o in onsets if o.metric == _CARRIER]

    @staticmethod
    def _translated(onset: Onset) -> Onset:
        return replace(onset, attribute=onset.attribute.attribute, metric=onset.attribute.metric)

    def __setstate__(self, state: dict) -> None:
        """Unpickle; a state written before typed keys (snapshot format 2 as well) named the carrier
        attributes ``"<metric>@<attribute>"``: they become the generation decisions' ``DecisionKey``s."""
        self.__dict__.update(state)
        self.monitor.rename_attributes(_typed_carrier)

    @property
    def onsets(self) -> list[Onset]:
        """Every breach declared so far, in generation terms."""
        return [self._translated(o) for o in self.monitor.onsets if o.metric == _CARRIER]

    @property
    def states(self) -> dict[DecisionKey, DecisionState]:
        """(attribute, generation metric) -> the latest check's decision, as the exporter reads them."""
        return {key.attribute: state for key, state in self.monitor.states.items() if key.metric == _CARRIER}
