"""``fairwatch decide``: breach decisions on the summed counts of several workers.

Each worker exports since-start counters per (model, attribute, group, cell)
(``fairwatch_group_events_total``); counts are additive, so their sum is what
one worker that saw the whole stream would hold. This command scrapes every
worker's /metrics, sums the counters and feeds the increase to
``monitor.breach.MergedDecisions``, at the full ``family_error`` (the workers'
own decisions split it ``workers`` ways). It prints each breach as a JSON line
and serves the decision gauges on its own /metrics.

>>> text = '''# TYPE fairwatch_group_events counter
... fairwatch_group_events_total{model="m",attribute="sex",group="F",cell="predictions"} 10.0
... fairwatch_group_events_total{model="m",attribute="sex",group="F",cell="positives"} 4.0
... fairwatch_group_events_total{model="m",attribute="sex",group="F",cell="tp"} 3.0
... fairwatch_group_events_total{model="m",attribute="sex",group="F",cell="fn"} 1.0
... '''
>>> totals_from_exposition(text)["m"].rows["sex"]["F"]
(10.0, 4.0, 4.0, 3.0, 0.0, 0.0)
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.request

from fairwatch.command_support import http_url, positive_float
from fairwatch.flags import add_config_file_flag, add_metrics_flags
from fairwatch.monitor import metric_names as names
from fairwatch.monitor.breach import (FPR_N, FPR_X, SEL_N, SEL_X, TPR_N, TPR_X, MergedDecisions, Totals,
                                      worst_per_metric)
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.errors import first_line

# Decision columns from the exported cells: (column, cells summed).
DECISION_CELLS = ((SEL_N, ("predictions",)), (SEL_X, ("positives",)), (TPR_N, ("tp", "fn")), (TPR_X, ("tp",)),
                  (FPR_N, ("fp", "tn")), (FPR_X, ("fp",)))
LABELS = (names.MODEL, names.ATTRIBUTE, names.GROUP, names.CELL)
MAX_EXACT_COUNT = 2.0**53


def impossible_counts(totals: Totals) -> str | None:
    """The first group of one worker whose counts cannot be, in words; None when every group's can.

    A prediction is counted with its group, so a worker's positives never exceed its predictions. Labelled
    counts have no such bound: a worker counts the label of a prediction another worker counted, or one made
    before any worker started (from the join's copy of it), so tp + fp may exceed positives even in the sum.
    """
    for attribute, groups in totals.rows.items():
        for group, row in groups.items():
            if row[SEL_X] > row[SEL_N]:
                return (f"attribute {attribute!r}, group {group!r}: positives = {int(row[SEL_X])} > "
                        f"predictions = {int(row[SEL_N])}")
    return None


def totals_from_exposition(text: str) -> dict[str, Totals]:
    """Per model, the decision counts in one worker's /metrics text.

    A text that is not an exposition, or whose counts cannot be summed or are impossible (a positive
    count above the predictions), is a ValueError naming the problem.
    """
    from prometheus_client.parser import text_string_to_metric_families

    cells: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name + "_total" != names.GROUP_EVENTS and family.name != names.GROUP_EVENTS:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # _created
            missing = [label for label in LABELS if label not in sample.labels]
            if missing:
                raise ValueError(f"a {sample.name} series has no {missing[0]!r} label")
            # A NaN or infinite count would poison every later sum, and past 2**53 a float
            # no longer holds every integer; a negative or fractional one is no count at all.
            if not 0 <= sample.value <= MAX_EXACT_COUNT or not float(sample.value).is_integer():
                raise ValueError(f"a {sample.name} series has the value {sample.value}, not a count")
            key = (sample.labels[names.MODEL], sample.labels[names.ATTRIBUTE], sample.labels[names.GROUP])
            cells.setdefault(key, {})[sample.labels[names.CELL]] = sample.value
    rows: dict[str, dict[str, dict[str, tuple[float, ...]]]] = {}
    predictions: dict[str, dict[str, float]] = {}  # model -> attribute -> predictions
    for (model, attribute, group), values in cells.items():
        row = [0.0] * 6
        for column, summed in DECISION_CELLS:
            row[column] = sum(values.get(c, 0.0) for c in summed)
        rows.setdefault(model, {}).setdefault(attribute, {})[group] = tuple(row)
        per_attribute = predictions.setdefault(model, {})
        per_attribute[attribute] = per_attribute.get(attribute, 0.0) + row[SEL_N]
    # Every prediction carries each attribute it is tracked under; the largest
    # total is the model's prediction count (an attribute some events lack has less).
    out = {model: Totals(int(max(predictions[model].values())), attributes) for model, attributes in rows.items()}
    for model, totals in out.items():
        problem = impossible_counts(totals)
        if problem is not None:
            raise ValueError(f"model {model!r}, {problem}")
    return out


def decider(config: MonitorConfig, model: str) -> MergedDecisions:
    """Merged decisions for ``model`` with the family the workers' pipeline uses, at the full error."""
    from fairwatch.monitor.model_monitor import decision_settings

    # The workers' own settings (one place), but at the full family error: the merged counts are one stream.
    settings = {**decision_settings(config, model), "family_error": config.family_error}
    return MergedDecisions(model, subgroup_attributes=sorted("&".join(c) for c in config.search_intersections()),
                           **settings)


class MergedDecisionCollector:
    """The decision gauges of merged decisions, under the workers' metric names."""

    def __init__(self, decisions: dict[str, MergedDecisions]) -> None:
        self.decisions = decisions

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = [names.MODEL, names.ATTRIBUTE, names.METRIC]
        bound = GaugeMetricFamily(names.DECISION_BOUND, "Anytime-valid bound on the merged counts", labels=labels)
        threshold = GaugeMetricFamily(names.DECISION_THRESHOLD, "Threshold of the decision", labels=labels)
        breach = GaugeMetricFamily(names.DECISION_BREACH, "1 while the merged decision is a breach", labels=labels)
        onsets = CounterMetricFamily(names.BREACH_ONSETS, "Breaches declared on the merged counts", labels=labels)
        for model, merged in list(self.decisions.items()):
            counts: dict[tuple[str, str], int] = {}
            for onset in merged.monitor.onsets:
                counts[(onset.attribute, onset.metric)] = counts.get((onset.attribute, onset.metric), 0) + 1
            for (attribute, metric), state in worst_per_metric(dict(merged.states)).items():  # as the workers export
                key = [model, attribute, metric]
                if state.bound == state.bound:  # not NaN
                    bound.add_metric(key, state.bound)
                threshold.add_metric(key, state.threshold)
                breach.add_metric(key, 1.0 if state.breached else 0.0)
                onsets.add_metric(key, counts.get((attribute, metric), 0))
        yield from (bound, threshold, breach, onsets)


class ScrapeError(Exception):
    """A worker that did not answer, or answered with a body that is not usable counts."""


def scrape(url: str, timeout_seconds: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_seconds) as response:  # noqa: S310 (operator-given URLs)
        return response.read().decode()


def scrape_totals(url: str, timeout_seconds: float) -> dict[str, Totals]:
    """One worker's decision counts; ScrapeError (with the reason) when it does not answer or its body is unusable."""
    try:
        return totals_from_exposition(scrape(url, timeout_seconds))
    except UnicodeDecodeError:
        raise ScrapeError(f"{url}: the /metrics body is not UTF-8 text") from None
    except ValueError as exc:
        raise ScrapeError(f"{url}: the /metrics body is unusable ({first_line(exc, 160)})") from None
    except (OSError, http.client.HTTPException) as exc:  # HTTPException: an answer that is not HTTP at all
        raise ScrapeError(f"{url}: did not answer ({first_line(exc, 160)})") from None


def decide_once(decisions: dict[str, MergedDecisions], texts: list[str], config: MonitorConfig,
                now: float | None = None) -> list[dict]:
    """One round: the workers' /metrics texts in, the new breaches out (as report entries)."""
    return decide_on_totals(decisions, [totals_from_exposition(text) for text in texts], config, now)


def decide_on_totals(decisions: dict[str, MergedDecisions], workers: list[dict[str, Totals]], config: MonitorConfig,
                     now: float | None = None) -> list[dict]:
    """One round on the workers' parsed counts (``totals_from_exposition`` of each)."""
    per_model: dict[str, list[Totals]] = {}
    for worker in workers:
        for model, totals in worker.items():
            per_model.setdefault(model, []).append(totals)
    out = []
    for model, parts in per_model.items():
        merged = decisions.get(model)
        if merged is None:
            merged = decisions[model] = decider(config, model)
        try:
            onsets = merged.update(parts, now=now)
        except ValueError:
            # A worker restarted without its counts: start over from the current sums
            # (fresh sequences: still valid, the history is lost).
            print(f"fairwatch decide: the counts of {model} went down; starting its decisions over",
                  file=sys.stderr)
            merged = decisions[model] = decider(config, model)
            onsets = merged.update(parts, now=now)
        out += [{"model": model, **onset.as_dict()} for onset in onsets]
    return out


def register(commands) -> None:
    parser = commands.add_parser("decide", help="breach decisions on the summed counters of several workers")
    parser.add_argument("workers", nargs="+", type=http_url, metavar="URL", help="each worker's /metrics URL")
    add_config_file_flag(parser, "[monitor] (the workers' file)")
    parser.add_argument("--interval", type=positive_float, default=15.0, help="seconds between scrapes (15)")
    add_metrics_flags(parser, port=9109, port_help="serve the merged decisions' /metrics here",
                      aliases=("--port",), addr_aliases=("--addr",))
    parser.add_argument("--rounds", type=int, default=0, help="stop after this many scrapes (0: never)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from fairwatch.command_support import serve_registry

    from fairwatch.settings import load_settings

    config = load_settings(args.config).monitor
    decisions: dict[str, MergedDecisions] = {}
    registry = CollectorRegistry()
    registry.register(MergedDecisionCollector(decisions))
    serve_registry(registry, args.metrics_port, args.metrics_addr)
    done = 0
    while not args.rounds or done < args.rounds:
        started = time.monotonic()
        try:
            workers = [scrape_totals(url, timeout_seconds=max(1.0, args.interval / 2)) for url in args.workers]
        except ScrapeError as exc:
            # A round needs every worker: a partial sum would undercount, not wrong any
            # decision, but the next full round catches up. Say so and wait.
            print(f"fairwatch decide: {exc}; skipping this round", file=sys.stderr, flush=True)
        else:
            for onset in decide_on_totals(decisions, workers, config, now=time.time()):
                print(json.dumps(onset), flush=True)
        done += 1
        if not args.rounds or done < args.rounds:
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    return 0
