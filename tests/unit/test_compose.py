"""docker-compose.yml as a file (no Docker engine here): services, mounts, pinned images, health checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
FAIRWATCH_SERVICES = {"worker": "run", "trigger": "trigger", "producer": "produce", "join": "join"}


def mounts(service: str) -> list[tuple[str, str]]:
    """(source, target) of each volume entry of a service."""
    return [tuple(v.split(":")[:2]) for v in SERVICES[service].get("volumes", [])]


def test_every_service_of_the_stack_is_there():
    assert {"kafka", "prometheus", "alertmanager", "grafana", "worker", "join", "trigger", "producer"} <= set(SERVICES)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_a_healthcheck(service):
    check = SERVICES[service].get("healthcheck", {})
    assert check.get("test") and not check.get("disable"), f"{service} has no healthcheck"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_image_is_pinned(service):
    image = SERVICES[service].get("image")
    assert image, f"{service} names no image"
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest" and re.search(r"\d", tag), f"{service}: {image} is not pinned"


def _stages() -> dict[str, list[str]]:
    """Instructions of each stage of deploy/Dockerfile, by stage name (comments left out)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        found = re.match(r"FROM (\S+) AS (\S+)", line)
        if found:
            current = found.group(2)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_the_fairwatch_image_is_built_from_the_slim_python_without_torch():
    stages = _stages()
    base = stages["fairwatch"][0].split()[1]
    assert base.startswith("python:3.11") and "slim" in base and "latest" not in base
    assert any('pip install ".[kafka]"' in line for line in stages["fairwatch"])
    assert not any("torch" in line or "[ml" in line for line in stages["fairwatch"])
    for service, spec in SERVICES.items():
        if "build" in spec and service != "trigger":
            assert spec["build"]["target"] == "fairwatch", service


def test_the_trigger_runs_the_finetune_job_on_the_cpu_trainer_image():
    trigger = SERVICES["trigger"]
    assert trigger["build"]["target"] == "trainer" and trigger["image"] != SERVICES["worker"]["image"]
    trainer = " ".join(_stages()["trainer"])
    assert _stages()["trainer"][0].startswith("FROM fairwatch AS trainer")
    # The CPU wheel of torch, pinned, then the ml extra the job imports.
    assert re.search(r"torch==[\d.]+ --index-url https://download\.pytorch\.org/whl/cpu", trainer), trainer
    assert "[ml" in trainer
    command = trigger["command"]
    job = command[command.index("--job-command") + 1]
    assert job.startswith("fairwatch finetune {data} ") and "--device cpu" in job
    assert {"{data}", "{model}", "{out}", "{report}"} <= set(re.findall(r"\{\w+\}", job))
    # The serving model is mounted, read only, and documented where it is mounted from; the window is not a file.
    assert ("./deploy/models", "/models") in mounts("trigger") and "--model-dir /models/{model}/model" in job
    assert "window.jsonl" not in job
    assert (REPO / "deploy" / "models" / "README.md").is_file()
    # The build context carries what the Dockerfile copies, and never the models.
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    copied = {line.split()[1] for line in _stages()["fairwatch"] if line.startswith("COPY ")}
    for folder in copied - {"pyproject.toml"}:
        assert f"!{folder}/**" in ignore or f"!{folder}" in ignore, folder
    assert ignore.index("deploy/models/**") > ignore.index("!deploy/**")


def test_the_trigger_exports_the_jobs_window_from_the_topic_the_worker_reads():
    """{data}: the trigger reads the incident's window back from Kafka itself, from the join's labeled topic."""
    from fairwatch.alerts.job_command import JobCommand, parse_job_policies
    from fairwatch.cli import build_parser

    trigger = build_parser().parse_args(SERVICES["trigger"]["command"])
    worker = build_parser().parse_args(SERVICES["worker"]["command"])
    assert trigger.bootstrap_servers == worker.bootstrap_servers == "kafka:9092"
    assert (trigger.predictions_topic, trigger.outcomes_topic) == (worker.predictions_topic, worker.outcomes_topic)
    assert worker.predictions_topic == "fairwatch.labeled" and trigger.outcomes_topic == ""
    assert SERVICES["trigger"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert JobCommand(trigger.job_command).uses_data and trigger.window_lookback_seconds == 86_400
    # The demo stream has no texts: its model's incidents run no fine-tune.
    from fairwatch.monitor.synthetic import SyntheticStream

    assert "SyntheticStream(n_events=300_000, shift_at=150_000)" in SERVICES["demo-data"]["command"][0]
    demo_model = SyntheticStream(n_events=300_000, shift_at=150_000).model
    assert parse_job_policies(trigger.job_policy, trigger.job_command) == {demo_model: None}


@pytest.mark.parametrize("service", sorted(FAIRWATCH_SERVICES))
def test_the_fairwatch_services_commands_parse_with_the_real_cli(service):
    """Each service's command as the image's entry point (`fairwatch`) reads it: flags that exist, values
    they accept (argparse exits on anything else)."""
    from fairwatch.cli import build_parser

    args = build_parser().parse_args(SERVICES[service]["command"])
    assert args.command == FAIRWATCH_SERVICES[service] and callable(args.handler)


def test_kafka_runs_in_kraft_mode():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(kafka["environment"]).upper()


def test_prometheus_mounts_the_committed_rules_and_scrapes_the_worker():
    assert ("./alerts/rules", "/etc/prometheus/rules") in mounts("prometheus")
    assert (REPO / "alerts" / "rules" / "fairwatch.rules.yml").exists()
    assert dict(mounts("prometheus"))["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/rules/*.yml" in config["rule_files"]
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert "worker:9108" in targets
    assert "9108" in SERVICES["worker"]["command"]


def test_prometheus_config_is_valid_with_the_rules(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make test` installs Debian's prometheus package"
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    # The container path of the rules, pointed at the committed folder.
    config["rule_files"] = [str(REPO / "alerts" / "rules" / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


COMPOSE_ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
LOCAL_ALERTMANAGER = REPO / "alerts" / "alertmanager.yml"


def test_alertmanager_has_its_own_network_and_reaches_the_trigger_by_name():
    alertmanager = SERVICES["alertmanager"]
    assert "network_mode" not in alertmanager and "9093:9093" in alertmanager["ports"]
    assert ("./deploy/alertmanager/alertmanager.yml", "/etc/alertmanager/alertmanager.yml") in mounts("alertmanager")
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for am in prometheus["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    token_mounts = {t for s in ("alertmanager", "trigger") for src, t in mounts(s) if src == "./deploy/trigger-token"}
    assert token_mounts == {"/etc/fairwatch/trigger-token"}


def test_the_compose_routing_is_the_committed_one_but_for_the_trigger_address():
    compose, local = (yaml.safe_load(p.read_text()) for p in (COMPOSE_ALERTMANAGER, LOCAL_ALERTMANAGER))
    (hook,) = next(r for r in compose["receivers"] if r["name"] == "fairwatch-trigger")["webhook_configs"]
    assert hook["url"] == "http://trigger:9119/alerts" and "9119" in SERVICES["trigger"]["command"]
    (local_hook,) = next(r for r in local["receivers"] if r["name"] == "fairwatch-trigger")["webhook_configs"]
    local_hook["url"] = hook["url"]
    assert compose == local


def test_every_receiver_posts_somewhere_that_listens():
    """A webhook URL names a service of the stack on a port it serves; no receiver points at nothing."""
    config = yaml.safe_load(COMPOSE_ALERTMANAGER.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            host, port = re.match(r"https?://([^:/]+):(\d+)/", hook["url"]).groups()
            assert host in SERVICES and port in " ".join(map(str, SERVICES[host]["command"])), hook["url"]
        integrations = [k for k in receiver if k.endswith("_configs")]
        assert integrations or receiver["name"] == "alertmanager-ui", receiver


@pytest.mark.parametrize("config", [COMPOSE_ALERTMANAGER, LOCAL_ALERTMANAGER], ids=["compose", "local"])
def test_amtool_accepts_the_alertmanager_config_and_routes_breaches_to_the_trigger(config):
    amtool = shutil.which("amtool")
    assert amtool, "amtool not found: `make test` installs Debian's prometheus-alertmanager package"
    check = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for labels, receivers in ((["alertname=FairnessGapBreach", "severity=page", "model=m", "attribute=a"],
                               "fairwatch-trigger,alertmanager-ui"),
                              (["alertname=FairwatchNoEvents", "severity=page"], "alertmanager-ui")):
        route = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}", *labels],
                               capture_output=True, text=True)
        assert route.returncode == 0 and route.stdout.strip() == receivers, route.stdout + route.stderr


def test_one_alert_path_prometheus_rules_not_grafana_managed_rules():
    """Grafana gets the datasource and the dashboards, not provisioning/alerting: the same rules
    loaded twice would page twice."""
    targets = {t for _, t in mounts("grafana")}
    assert "/etc/grafana/provisioning" not in targets
    assert not any("alerting" in src for src, _ in mounts("grafana"))
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= targets
    assert "deploy/grafana/provisioning/alerting/fairwatch.yml" in (REPO / "docker-compose.yml").read_text()


def test_prometheus_keeps_exemplars_and_both_images_have_the_tested_majors():
    """Exemplars carry the event ids of the incident page; the majors are those promtool and amtool
    check here (Debian's Prometheus 2.42, Alertmanager 0.25)."""
    assert "--enable-feature=exemplar-storage" in SERVICES["prometheus"]["command"]
    assert re.fullmatch(r"prom/prometheus:v2\.\d+\.\d+", SERVICES["prometheus"]["image"])
    assert re.fullmatch(r"prom/alertmanager:v0\.25\.\d+", SERVICES["alertmanager"]["image"])
    for tool, pattern in (("promtool", r"version 2\."), ("amtool", r"version 0\.25\.")):
        path = shutil.which(tool)
        assert path, f"{tool} not found: `make test` installs it"
        version = subprocess.run([path, "--version"], capture_output=True, text=True)
        assert re.search(pattern, version.stdout + version.stderr), version.stdout + version.stderr


def test_grafana_mounts_the_provisioning_and_the_committed_dashboards():
    grafana = dict(mounts("grafana"))
    assert grafana["./deploy/grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert grafana["./dashboards/json"].startswith("/var/lib/grafana/dashboards")
    assert sorted(p.name for p in (REPO / "dashboards" / "json").glob("*.json")) == \
        ["fairwatch-model.json", "fairwatch-overview.json"]
    for sub in ("datasources", "dashboards", "alerting"):
        assert list((REPO / "deploy" / "grafana" / "provisioning" / sub).glob("*.yml")), sub


@pytest.mark.parametrize("service, command", sorted(FAIRWATCH_SERVICES.items()))
def test_the_fairwatch_services_run_the_cli(service, command):
    spec = SERVICES[service]
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile" and spec["build"]["context"] == "."
    assert spec["command"][0] == command


def test_the_producer_replays_the_demo_stream_written_by_the_one_shot_service():
    producer, data = SERVICES["producer"], SERVICES["demo-data"]
    assert producer["depends_on"]["demo-data"]["condition"] == "service_completed_successfully"
    file = producer["command"][1]
    assert file in "".join(data["command"])
    assert {t for _, t in mounts("producer")} & {t for _, t in mounts("demo-data")}


def test_named_volumes_are_declared_and_used():
    declared = set(COMPOSE["volumes"])
    used = {src for s in SERVICES for src, _ in mounts(s) if not src.startswith(".")}
    assert used == declared
    for stateful in ("kafka", "prometheus", "grafana", "worker", "trigger"):
        assert any(not src.startswith(".") for src, _ in mounts(stateful)), stateful


def test_depends_on_names_only_services_with_healthchecks_when_waiting_for_health():
    for name, spec in SERVICES.items():
        for other, condition in spec.get("depends_on", {}).items():
            assert other in SERVICES, f"{name} depends on unknown {other}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[other]
