"""Hot attach: `incidents attach` writes a control file; a worker's step (`run --shadow-control`) attaches the
candidate between batches without a restart, detaches it, and keeps going through a control file it cannot use.
Real tiny models on CPU, the real pipeline, the real CLI."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import run_cli

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fairwatch.alerts.incidents import IncidentStore  # noqa: E402
from fairwatch.cli import build_parser  # noqa: E402
from fairwatch.consumers.replay_command import build_stages  # noqa: E402
from fairwatch.monitor.config import MonitorConfig  # noqa: E402
from fairwatch.monitor.pipeline import Pipeline  # noqa: E402
from fairwatch.monitor.scorer.shadow_control import (Attachment, ControlError, HotShadowStep,  # noqa: E402
                                                     read_control, write_control)
from test_scorer_step import _gendered_events  # noqa: E402
from test_shadow_step import _predictions, _selection_gap  # noqa: E402

BATCH = 16  # _gendered_events(1): 8 male-term texts predicted 1, 8 female-term texts predicted 0


def batch(pipeline: Pipeline, n: int) -> list:
    """Batch ``n``: the same texts under fresh event ids."""
    return [pipeline.parser.parse(json.dumps(json.loads(line) | {"event_id": f"b{n}-{i}"}))
            for i, line in enumerate(_gendered_events(1))]


def incident_with_candidate(db, candidate_dir) -> int:
    store = IncidentStore(db)
    alert = {"labels": {"alertname": "FairnessGapBreach", "model": "toxic", "attribute": "sex",
                        "metric": "demographic_parity_difference"}, "status": "firing"}
    incident, _ = store.open_or_update("toxic", "sex", alert)
    store.set_state(incident["id"], "job_succeeded", {}, job={"state": "succeeded", "candidate_dir": str(candidate_dir)})
    return incident["id"]


def worker_step(control) -> HotShadowStep:
    (step,) = build_stages(build_parser().parse_args(["run", "--shadow-control", str(control),
                                                      "--scorer-device", "cpu"])).stages()
    assert isinstance(step, HotShadowStep) and step.poll_seconds == 0  # a look at the file before every batch
    return step


def test_attach_detach_and_bad_control_files_between_batches_without_a_restart(tiny_model_dirs, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fairwatch.shadow")
    control, db = tmp_path / "shadow.json", tmp_path / "incidents.sqlite"
    incident_id = incident_with_candidate(db, tiny_model_dirs["ignores"])
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = worker_step(control)

    step.process(pipeline, batch(pipeline, 0))  # no control file yet: production only
    assert set(pipeline.models) == {"toxic"}

    attached = run_cli("incidents", "--db", db, "attach", incident_id, "--control", control, "--threshold", "0.6")
    assert attached.returncode == 0, attached.stderr
    assert f"fairwatch incidents shadow {incident_id}" in attached.stdout
    assert read_control(control) == Attachment(str(tiny_model_dirs["ignores"]), "toxic", 0.6, incident_id)
    step.process(pipeline, batch(pipeline, 1))
    # From the attach on, both sides count the same events; the candidate ignores the gender terms.
    assert _predictions(pipeline, "toxic") == 2 * BATCH
    assert _predictions(pipeline, "toxic:baseline") == _predictions(pipeline, "toxic:candidate") == BATCH
    assert _selection_gap(pipeline, "toxic:baseline") == pytest.approx(1.0)
    assert _selection_gap(pipeline, "toxic:candidate") < 0.05
    assert "shadow attached" in caplog.text and f"(incident {incident_id})" in caplog.text

    control.write_text("{not json")  # a broken file: one warning, the batch applied, the candidate kept
    step.process(pipeline, batch(pipeline, 2))
    assert "not JSON" in caplog.text
    assert _predictions(pipeline, "toxic:candidate") == 2 * BATCH and _predictions(pipeline, "toxic") == 3 * BATCH

    write_control(control, Attachment(str(tiny_model_dirs["keys"]), "toxic", 0.6))  # another candidate: refused
    step.process(pipeline, batch(pipeline, 3))
    assert "restart it to compare" in caplog.text
    assert step.attachment.candidate == str(tiny_model_dirs["ignores"])
    assert _predictions(pipeline, "toxic:candidate") == 3 * BATCH
    assert _selection_gap(pipeline, "toxic:candidate") < 0.05  # still only the first candidate's decisions

    detached = run_cli("incidents", "--db", db, "attach", incident_id, "--control", control, "--detach")
    assert detached.returncode == 0, detached.stderr
    step.process(pipeline, batch(pipeline, 4))
    assert step.shadow is None and "shadow detached" in caplog.text
    assert _predictions(pipeline, "toxic:candidate") == _predictions(pipeline, "toxic:baseline") == 3 * BATCH
    assert _predictions(pipeline, "toxic") == 5 * BATCH

    control.unlink()  # removed: nothing attached, nothing to do
    step.process(pipeline, batch(pipeline, 5))
    assert step.shadow is None and _predictions(pipeline, "toxic") == 6 * BATCH
    changes = [e["change"] for e in IncidentStore(db).get(incident_id)["timeline"]]
    assert changes[-2:] == ["shadow_attached", "shadow_detached"]
    step.close()


def test_a_candidate_named_before_the_start_is_attached_before_the_first_batch(tiny_model_dirs, tmp_path):
    control = tmp_path / "shadow.json"
    write_control(control, Attachment(str(tiny_model_dirs["ignores"]), "toxic", 0.6))
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = worker_step(control)
    step.process(pipeline, batch(pipeline, 0))
    assert _predictions(pipeline, "toxic:candidate") == _predictions(pipeline, "toxic") == BATCH
    step.close()


def test_a_candidate_that_does_not_load_is_one_warning_and_the_batch_is_applied(tmp_path, caplog):
    control = tmp_path / "shadow.json"
    write_control(control, Attachment(str(tmp_path / "no-such-model"), "toxic"))
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = worker_step(control)
    step.process(pipeline, batch(pipeline, 0))
    assert step.shadow is None and set(pipeline.models) == {"toxic"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--shadow-candidate" in warnings[0] and "nothing changed" in warnings[0]


@pytest.mark.parametrize("text, says", [
    ("[]", 'expected an object with "candidate"'),
    ('{"model": "toxic"}', 'expected an object with "candidate"'),
    ('{"candidate": 3, "model": "toxic"}', '"candidate" must be a directory path or null'),
    ('{"candidate": "/c"}', '"model" must name the production model'),
    ('{"candidate": "/c", "model": "toxic", "threshold": 2}', '"threshold" must be a number between 0 and 1'),
    ('{"candidate": "/c", "model": "toxic", "threshold": true}', '"threshold" must be a number'),
    ('{"candidate": "/c", "model": "toxic", "incident": "7"}', '"incident" must be an incident id'),
])
def test_malformed_control_files_are_refused_in_one_line(tmp_path, text, says):
    control = tmp_path / "shadow.json"
    control.write_text(text)
    with pytest.raises(ControlError) as raised:
        read_control(control)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_attach_refuses_an_incident_without_a_candidate_and_run_refuses_two_ways_to_name_one(tmp_path):
    db = tmp_path / "incidents.sqlite"
    store = IncidentStore(db)
    store.open_or_update("toxic", "sex", {"labels": {}, "status": "firing"})
    result = run_cli("incidents", "--db", db, "attach", "1", "--control", tmp_path / "c.json")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no candidate to attach" in result.stderr and not (tmp_path / "c.json").exists()
    both = run_cli("run", "--shadow-control", tmp_path / "c.json", "--shadow-candidate", tmp_path,
                   "--shadow-model", "toxic", "--bootstrap-servers", "127.0.0.1:1")
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1, both.stderr
    assert "--shadow-control names the candidate" in both.stderr
