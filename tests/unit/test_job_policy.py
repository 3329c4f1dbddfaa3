"""Per-model job policy (`trigger serve --job-policy MODEL=none|finetune|'a command'`): each model's incidents run
its own job, the default one, or none; a malformed policy stops the start in one line."""

from __future__ import annotations

import shlex
import sys

import pytest
from helpers import run_cli
from test_trigger import TOKEN, alert, payload

from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.job_command import parse_job_policies
from fairwatch.alerts.jobs import NO_COMMAND, JobRunner
from fairwatch.alerts.trigger import Trigger

# A job that records which command ran it, for which incident and model.
SCRIPT = "import json,sys; json.dump(sys.argv[1:], open(sys.argv[-1], 'w'))"


def job(name: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(SCRIPT)} {name} {{incident}} {{model}} {{report}}"


def test_each_model_runs_its_policys_job_and_a_none_model_gets_its_incident_without_one(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    policies = parse_job_policies(["credit=none", "toxic=finetune", f"ranker={job('ranker-job')}"],
                                  job("default-job"))
    jobs = JobRunner(store, job("default-job"), tmp_path / "jobs", policies=policies)
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    models = ["credit", "toxic", "ranker", "churn"]  # churn is not named: the default job

    response = trigger.handle(payload(*(alert(model=m) for m in models)), f"Bearer {TOKEN}")
    assert response.status == 200
    assert jobs.wait(60)

    incidents = {i["model"]: i for i in store.list()}
    assert set(incidents) == set(models)
    credit = incidents["credit"]
    assert credit["state"] == "job_skipped" and credit["job"]["state"] == "skipped"
    assert credit["timeline"][-1]["detail"] == {"why": "job policy of model credit: none (its incidents run no job)"}
    assert credit["alerts"] and not (tmp_path / "jobs" / f"incident-{credit['id']}").exists()
    ran = {}
    for model in ("toxic", "ranker", "churn"):
        incident = incidents[model]
        assert incident["state"] == "job_succeeded", incident["timeline"]
        ran[model] = incident["job"]["report"]
    assert ran == {"toxic": ["default-job", str(incidents["toxic"]["id"]), "toxic", ran["toxic"][-1]],
                   "ranker": ["ranker-job", str(incidents["ranker"]["id"]), "ranker", ran["ranker"][-1]],
                   "churn": ["default-job", str(incidents["churn"]["id"]), "churn", ran["churn"][-1]]}


def test_a_policy_without_a_default_command_runs_only_the_models_named(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, None, tmp_path / "jobs", policies=parse_job_policies([f"toxic={job('t')}"], None))
    Trigger(store, TOKEN, policy="auto", jobs=jobs).handle(payload(alert(model="toxic"), alert(model="credit")),
                                                           f"Bearer {TOKEN}")
    assert jobs.wait(60)
    states = {i["model"]: (i["state"], i["timeline"][-1]["detail"]) for i in store.list()}
    assert states["toxic"][0] == "job_succeeded"
    assert states["credit"] == ("job_skipped", {"why": NO_COMMAND})


def test_a_policy_naming_data_needs_the_triggers_kafka(tmp_path):
    with pytest.raises(ValueError, match="--job-policy toxic names {data}"):
        JobRunner(IncidentStore(tmp_path / "i.sqlite"), None, tmp_path / "jobs",
                  policies=parse_job_policies(["toxic=train {data}"], None))


@pytest.mark.parametrize("flags, says", [
    (["--job-policy", "credit"], "--job-policy 'credit': expected MODEL=none, MODEL=finetune or MODEL='a command'"),
    (["--job-policy", "=none"], "expected MODEL=none"),
    (["--job-policy", "credit="], "expected MODEL=none"),
    (["--job-policy", "credit=finetune"], "'finetune' runs --job-command, which is not set"),
    (["--job-command", "ft {out}", "--job-policy", "credit=none", "--job-policy", "credit=finetune"],
     "model 'credit' is given twice"),
    (["--job-policy", "toxic=train {dta}"], "--job-policy toxic: unknown placeholder {dta}"),
    (["--job-policy", "toxic=train 'unclosed"], "--job-policy toxic: cannot split it into arguments"),
    (["--job-policy", "../etc=none"], "model '../etc' holds characters"),
])
def test_a_malformed_policy_stops_the_start_in_one_line_and_creates_no_store(tmp_path, monkeypatch, flags, says):
    monkeypatch.setenv("FAIRWATCH_TRIGGER_TOKEN", TOKEN)
    db = tmp_path / "i.sqlite"
    result = run_cli("trigger", "serve", "--db", db, "--listen-port", "0", *flags)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert "Traceback" not in result.stderr and not db.exists()


def test_the_policy_flag_is_documented_in_help():
    result = run_cli("trigger", "serve", "--help")
    assert result.returncode == 0 and "--job-policy MODEL=POLICY" in result.stdout
    assert "'none' (no job: a tabular model without texts to fine-tune on)" in " ".join(result.stdout.split())
