"""`fairwatch export` against the real Tansu broker: a window of two days of events read back by record time,
joined with outcomes that came later, malformed records skipped and reported, bad flags in one line."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

import pytest
from conftest import CLIENTS

from fairwatch.cli import main

pytestmark = [pytest.mark.kafka]

MODEL = "credit"
DAY_ONE = datetime(2026, 11, 20, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
WINDOW_FROM = DAY_ONE + 12 * HOUR  # the middle day: 12:00 on day one ...
WINDOW_TO = DAY_ONE + 36 * HOUR  # ... to 12:00 on day two, included
OUTCOME_DELAY = 2 * HOUR  # so the outcomes of the window's last two hours come after its end


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def stream():
    """Two days of hourly predictions of two models, and the outcomes of most of them two hours later.

    Returns (records as (topic key, event_id, value, record time), {event_id: (label, text, groups)}
    of the predictions of MODEL that have an outcome)."""
    records, labeled = [], {}
    for hour in range(48):
        at = DAY_ONE + hour * HOUR
        for model in (MODEL, "other"):
            event_id = f"{model}-{hour}"
            groups = {"sex": "Female" if hour % 2 else "Male"}
            text = f"applicant {hour} of {model}"
            prediction = {"event_id": event_id, "ts": at.isoformat(), "model": model, "prediction": hour % 3 == 0,
                          "score": (hour % 10) / 10, "groups": groups, "text": text}
            prediction["prediction"] = int(prediction["prediction"])
            records.append(("predictions", event_id, json.dumps(prediction).encode(), at))
            if hour % 7 == 3:  # never labeled
                continue
            label = (hour // 2) % 2
            outcome = {"event_id": event_id, "ts": (at + OUTCOME_DELAY).isoformat(), "label": label}
            records.append(("outcomes", event_id, json.dumps(outcome).encode(), at + OUTCOME_DELAY))
            if model == MODEL:
                labeled[event_id] = (label, text, groups)
    return records, labeled


def inside_window(event_id: str) -> bool:
    hour = int(event_id.rsplit("-", 1)[1])
    return WINDOW_FROM <= DAY_ONE + hour * HOUR <= WINDOW_TO


def send(broker, topics: dict, records) -> None:
    """Produce (topic key, key, value, record time) in time order, as a production stream arrives."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5, acks="all")
    futures = [producer.send(topics[topic], key=key.encode(), value=value, timestamp_ms=ms(at))
               for topic, key, value, at in sorted(records, key=lambda r: r[3])]
    producer.flush()
    for future in futures:
        future.get(timeout=30)  # every record acknowledged before the export reads
    producer.close()


def export(broker, topics: dict, out, *extra: str, start: str = WINDOW_FROM.isoformat(),
           end: str = WINDOW_TO.isoformat(), model: str = MODEL, client: str = "kafka-python") -> int:
    return main(["export", "--model", model, "--from", start, "--to", end, "--out", str(out), "--client", client,
                 "--bootstrap-servers", broker.bootstrap_servers, "--predictions-topic", topics["predictions"],
                 "--outcomes-topic", topics["outcomes"], *extra])


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("client", CLIENTS)
def test_export_writes_the_windows_labeled_events_with_late_outcomes_and_skips_malformed_records(
        broker, topics, tmp_path, capsys, client):
    records, labeled = stream()
    inside = DAY_ONE + 20 * HOUR
    malformed = [("predictions", "junk-1", b"{not json", inside),
                 ("predictions", "junk-2", json.dumps({"event_id": "junk-2", "model": MODEL, "prediction": 1})
                  .encode(), inside),  # no groups
                 ("outcomes", "junk-3", json.dumps({"event_id": "junk-3", "label": 7}).encode(), inside)]
    send(broker, topics, records + malformed)
    out = tmp_path / "window.jsonl"

    assert export(broker, topics, out, client=client) == 0

    rows = read_jsonl(out)
    expected = {event_id: fields for event_id, fields in labeled.items() if inside_window(event_id)}
    assert len(rows) == len(expected) and {row["event_id"] for row in rows} == set(expected)
    for row in rows:
        label, text, groups = expected[row["event_id"]]
        assert (row["label"], row["text"], row["groups"], row["model"]) == (label, text, groups, MODEL)
    from fairwatch.alerts.finetune import read_events  # the fine-tune's own reader takes every row

    read = read_events(out)
    assert (len(read.examples), read.rejected, read.unlabeled) == (len(expected), 0, 0)
    last_hour = f"{MODEL}-36"  # its outcome came two hours after the window's end
    assert last_hour in expected and last_hour in {row["event_id"] for row in rows}
    err = capsys.readouterr().err
    assert err.count("skipped malformed record") == 3, err
    assert "not_json" in err and "missing_field" in err and "unknown_label" in err
    unlabeled_inside = sum(1 for hour in range(12, 37) if hour % 7 == 3)
    assert f"exported {len(expected)} labeled events of {MODEL}" in err
    assert f"{unlabeled_inside} without an outcome yet" in err


@pytest.mark.parametrize("client", CLIENTS)
def test_export_reads_the_joins_labeled_topic_alone(broker, topics, tmp_path, capsys, client):
    """--outcomes-topic '': predictions and their later outcome events on one topic, as `fairwatch join` writes."""
    records, labeled = stream()
    send(broker, topics, [("predictions", *rest) for _topic, *rest in records])
    out = tmp_path / "window.jsonl"

    assert main(["export", "--model", MODEL, "--from", str(WINDOW_FROM.timestamp()),
                 "--to", str(WINDOW_TO.timestamp()), "--out", str(out), "--client", client, "--bootstrap-servers",
                 broker.bootstrap_servers, "--predictions-topic", topics["predictions"], "--outcomes-topic", ""]) == 0

    assert {row["event_id"] for row in read_jsonl(out)} == {e for e in labeled if inside_window(e)}


def test_export_of_a_model_without_events_is_one_line_and_writes_nothing(broker, topics, tmp_path, capsys):
    records, _labeled = stream()
    send(broker, topics, records)
    out = tmp_path / "window.jsonl"

    assert export(broker, topics, out, model="no-such-model") == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no prediction of model 'no-such-model'" in err, err
    assert f"{MODEL} (" in err  # names the models that are there
    assert not out.exists()


@pytest.mark.parametrize("client", CLIENTS)
def test_export_of_an_idle_empty_topic_ends(broker, topics, tmp_path, capsys, client):
    assert export(broker, topics, tmp_path / "window.jsonl", client=client) == 2
    assert "no prediction of model" in capsys.readouterr().err


@pytest.mark.parametrize("start, end, says", [
    ("2026-11-21T00:00:00Z", "2026-11-20T00:00:00Z", "is after --to"),
    ("yesterday", "2026-11-20T00:00:00Z", "--from 'yesterday' is neither ISO-8601"),
    ("2026-11-20", "soon", "--to 'soon' is neither ISO-8601"),
])
def test_bad_window_flags_are_one_line(tmp_path, capsys, start, end, says):
    """Refused before any connection: no broker needed."""
    assert main(["export", "--model", MODEL, "--from", start, "--to", end, "--out", str(tmp_path / "w.jsonl"),
                 "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err


JOB_SCRIPT = """
import json, sys
data, report = sys.argv[1:]
json.dump([json.loads(line) for line in open(data)], open(report, "w"))
"""


def test_the_triggers_job_gets_the_incidents_window_from_kafka_as_data(broker, topics, tmp_path):
    """`trigger serve` flags -> the window of an incident (onset minus the lookback, to acceptance) exported from
    the broker -> a real job process reads {data}."""
    from fairwatch.alerts.incidents import IncidentStore
    from fairwatch.alerts.jobs import JobRunner
    from fairwatch.alerts.trigger import Trigger
    from fairwatch.alerts.trigger_command import window_export_from_settings
    from fairwatch.consumers.export_command import window_source_settings
    from fairwatch.cli import build_parser

    records, labeled = stream()
    send(broker, topics, records)
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT)
    lookback = timedelta(hours=12)
    args = build_parser().parse_args([
        "trigger", "serve", "--bootstrap-servers", broker.bootstrap_servers, "--predictions-topic",
        topics["predictions"], "--outcomes-topic", topics["outcomes"],
        "--window-lookback-seconds", str(lookback.total_seconds())])
    store = IncidentStore(tmp_path / "incidents.sqlite")
    jobs = JobRunner(store, f"{sys.executable} {script} {{data}} {{report}}", tmp_path / "jobs",
                     window_export=window_export_from_settings(window_source_settings(args)), lookback_seconds=args.window_lookback_seconds,
                     clock=lambda: WINDOW_TO.timestamp())
    trigger = Trigger(store, "token", policy="auto", jobs=jobs)
    breach = {"status": "firing", "startsAt": (WINDOW_FROM + lookback).isoformat(), "fingerprint": "f",
              "labels": {"alertname": "FairnessGapBreach", "model": MODEL, "attribute": "sex", "metric": "fped"}}

    assert trigger.handle(json.dumps({"alerts": [breach]}).encode(), "Bearer token").status == 200
    assert jobs.wait(120)

    incident = store.get(1)
    assert incident["state"] == "job_succeeded", incident["timeline"]
    rows = incident["job"]["report"]
    assert {row["event_id"]: (row["label"], row["text"]) for row in rows} == {
        event_id: (label, text) for event_id, (label, text, _groups) in labeled.items() if inside_window(event_id)}
    assert incident["job"]["export"]["written"] == len(rows)


def test_an_unreachable_broker_is_one_line(tmp_path, capfd):
    """confluent-kafka (its metadata wait is 10 s; kafka-python's bootstrap gives up after about 35 s)."""
    from fairwatch.consumers.broker import free_port

    assert main(["export", "--model", MODEL, "--from", "0", "--to", "1", "--out", str(tmp_path / "w.jsonl"),
                 "--client", "confluent", "--bootstrap-servers", f"127.0.0.1:{free_port()}"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no broker answered" in err, err
