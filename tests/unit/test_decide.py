"""``fairwatch decide``: decisions on the summed /metrics of workers equal those of one worker."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest

from fairwatch.monitor.config import MonitorConfig
from fairwatch.decide import MergedDecisionCollector, decide_once, totals_from_exposition
from fairwatch.monitor.exporter import make_registry
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.synthetic import near_threshold_stream
from test_breach import events_of

STEP = 4000


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_scraped_workers_decide_as_one_worker_that_saw_everything(workers):
    config = MonitorConfig(attributes=["A", "B", "C"], count_windows=[], time_windows_seconds=[])
    codes, prediction, label = near_threshold_stream(seed=5, n=48_000, shift_at=16_000, shift=0.3)
    whole = Pipeline(config)
    parts = [Pipeline(config) for _ in range(workers)]
    worker_of = np.random.default_rng(2).integers(0, workers, prediction.size)  # events keyed by id
    merged_of_one, merged_of_many = {}, {}
    found_one, found_many = [], []
    for start in range(0, prediction.size, STEP):
        step = np.arange(start, start + STEP)
        whole.process_events(events_of({a: c[step] for a, c in codes.items()}, prediction[step], label[step], start))
        for w, pipeline in enumerate(parts):
            mine = step[worker_of[step] == w]
            events = events_of({a: c[mine] for a, c in codes.items()}, prediction[mine], label[mine])
            for event, i in zip(events, mine):
                event.event_id = str(i)
            pipeline.process_events(events)
        # One scrape round of each: one worker's /metrics, and the several workers'.
        found_one += decide_once(merged_of_one, [generate_latest(make_registry(whole)).decode()], config)
        found_many += decide_once(merged_of_many, [generate_latest(make_registry(p)).decode() for p in parts],
                                  config)
        one, many = merged_of_one["m"].states, merged_of_many["m"].states
        assert one.keys() == many.keys()
        for key, state in one.items():
            assert many[key].breached == state.breached, (start, key)
            assert many[key].bound == pytest.approx(state.bound, abs=1e-9, nan_ok=True)
    assert found_one and found_many == found_one
    assert all(f["event_index"] >= 16_000 for f in found_one if f["attribute"] == "A")
    # The merged decisions are served under the workers' decision metric names.
    text = generate_latest(_registry(MergedDecisionCollector(merged_of_many))).decode()
    assert 'fairwatch_decision_breach{attribute="A",metric="equalized_odds_difference",model="m"} 1.0' in text


def _registry(collector):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def metrics_text(groups: dict[str, dict[str, float]]) -> str:
    """One worker's /metrics text of model m, attribute sex: group -> cell -> count."""
    return "# TYPE fairwatch_group_events counter\n" + "".join(
        f'fairwatch_group_events_total{{model="m",attribute="sex",group="{g}",cell="{c}"}} {float(v)}\n'
        for g, cells in groups.items() for c, v in cells.items())


COUNTS = metrics_text({g: {"predictions": 10, "positives": 4} for g in ("F", "M")})
BAD_BODIES = {  # body -> what the one stderr line must say
    b"<html><body>Bad gateway</body></html>": "invalid metric name",
    b"\xff\xfe\x00\x81 not text": "not UTF-8",
    COUNTS.replace("10.0", "NaN", 1).encode(): "value nan, not a count",
    COUNTS.replace("10.0", "+Inf", 1).encode(): "value inf, not a count",
    COUNTS.replace(',group="F"', "", 1).encode(): "no 'group' label",
    # impossible counts were summed and decided on
    COUNTS.replace("4.0", "11.0", 1).encode():
        "model 'm', attribute 'sex', group 'F': positives = 11 > predictions = 10",
    COUNTS.replace("4.0", "2.5", 1).encode(): "value 2.5, not a count",
}


def test_a_worker_answering_an_unusable_body_skips_the_round_and_decide_goes_on():
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    from helpers import run_cli

    bodies = [COUNTS.encode(), *BAD_BODIES, COUNTS.encode()]
    served = []

    class Worker(BaseHTTPRequestHandler):
        def do_GET(self):
            body = bodies[min(len(served), len(bodies) - 1)]
            served.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Worker)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        result = run_cli("decide", url, "--rounds", len(bodies), "--interval", "0.01", "--metrics-port", "0")
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert served == bodies  # every round scraped: the loop went on after each bad body
    skipped = [line for line in result.stderr.splitlines() if "skipping this round" in line]
    assert len(skipped) == len(BAD_BODIES)  # the two good rounds are used
    for line, reason in zip(skipped, BAD_BODIES.values()):
        assert line.startswith(f"fairwatch decide: {url}: ") and reason in line, line


@pytest.mark.parametrize(("argv", "message"), [
    (["notaurl"], "'notaurl' is not an http(s) URL"),
    (["file:///etc/passwd"], "'file:///etc/passwd' is not an http(s) URL"),
    (["http://worker:port/metrics"], "is not a URL"),
    (["http://w/metrics", "--interval", "nan"], "'nan' is not a finite number"),
    (["http://w/metrics", "--interval", "-1"], "'-1' is not a positive number"),
    (["http://w/metrics", "--interval", "0"], "'0' is not a positive number"),
])
def test_decide_refuses_a_bad_url_or_interval_in_one_line(argv, message):
    from helpers import run_cli

    result = run_cli("decide", *argv, "--rounds", "1", "--metrics-port", "0")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def _exposition(**cells: float) -> str:
    """One worker's /metrics text: model m, attribute sex, group F with these cells (and a consistent group M
    where F has predictions)."""
    rows = {"F": cells}
    if cells.get("predictions"):
        rows["M"] = {"predictions": 10, "positives": 4, "tp": 2, "fp": 1, "tn": 5, "fn": 1}
    return metrics_text(rows)


CONFIG = MonitorConfig(attributes=["sex"], count_windows=[], time_windows_seconds=[])


def test_labels_beyond_the_counted_predictions_are_still_decided_on(capsys):
    # Labels of predictions made before any worker started come from the join's copies: in the sum, more
    # labelled positive predictions than positives. Refusing them would stall the model's decisions for good.
    decisions = {}
    decide_once(decisions, [_exposition(predictions=10, positives=4, tp=3, fp=1), _exposition(tp=1, fp=2)], CONFIG)
    assert decisions["m"].monitor.clock == 20 and capsys.readouterr().err == ""


def test_a_label_counted_on_another_worker_than_its_prediction_is_decided_on(capsys):
    # the join's copy of a prediction: a worker may count the label of a prediction another one counted
    assert totals_from_exposition(_exposition(tp=3, fn=1))["m"].rows["sex"]["F"] == (0.0, 0.0, 4.0, 3.0, 0.0, 0.0)
    decisions = {}
    decide_once(decisions, [_exposition(predictions=10, positives=4), _exposition(tp=3, fn=1)], CONFIG)
    assert decisions["m"].monitor.clock == 20 and capsys.readouterr().err == ""


def test_a_group_whose_counts_fall_while_the_predictions_rise_starts_the_decisions_over(capsys):
    # Worker b restarted without its state while worker a grew past it: the sum of the predictions rose,
    # group F's fell. A negative increase fed to the sequences is no count; start over, as when the total falls.
    def worker(**groups: tuple[int, int]) -> str:  # group -> (predictions, positives)
        return metrics_text({g: {"predictions": n, "positives": x} for g, (n, x) in groups.items()})

    decisions = {}
    decide_once(decisions, [worker(F=(10, 4), M=(10, 4)), worker(F=(10, 4), M=(10, 4))], CONFIG)
    first = decisions["m"]
    assert first.monitor.clock == 40 and capsys.readouterr().err == ""
    later = [worker(F=(10, 4), M=(40, 16), X=(3, 1)), worker(M=(5, 2))]  # F: 20 -> 10, all: 40 -> 58
    with pytest.raises(ValueError, match="counts under 'sex' fell"):
        first.update([totals_from_exposition(text)["m"] for text in later])
    assert first.names == {"sex": ["F", "M"]} and first.monitor.clock == 40  # a refused update changes nothing
    decide_once(decisions, later, CONFIG)
    assert capsys.readouterr().err == "fairwatch decide: the counts of m went down; starting its decisions over\n"
    assert decisions["m"] is not first and decisions["m"].monitor.clock == 58
