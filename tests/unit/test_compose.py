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


def test_the_fairwatch_image_is_built_from_the_slim_python_without_torch():
    dockerfile = (REPO / SERVICES["worker"]["build"]["dockerfile"]).read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert base.startswith("python:3.11") and "slim" in base and "latest" not in base
    instructions = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    assert any('pip install ".[kafka]"' in line for line in instructions)
    assert not any("torch" in line or "[ml" in line for line in instructions)


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


def test_alertmanager_uses_the_committed_config_and_reaches_the_trigger():
    alertmanager = SERVICES["alertmanager"]
    assert ("./alerts/alertmanager.yml", "/etc/alertmanager/alertmanager.yml") in mounts("alertmanager")
    # alerts/alertmanager.yml posts to 127.0.0.1:9119: true only inside the trigger's network namespace.
    assert alertmanager["network_mode"] == "service:trigger"
    assert "127.0.0.1:9119" in (REPO / "alerts" / "alertmanager.yml").read_text()
    assert "9119" in SERVICES["trigger"]["command"]
    token_mounts = {t for s in ("alertmanager", "trigger") for src, t in mounts(s) if src == "./deploy/trigger-token"}
    assert token_mounts == {"/etc/fairwatch/trigger-token"}


def test_grafana_mounts_the_provisioning_and_the_committed_dashboards():
    grafana = dict(mounts("grafana"))
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["./dashboards/json"].startswith("/var/lib/grafana/dashboards")
    assert sorted(p.name for p in (REPO / "dashboards" / "json").glob("*.json")) == \
        ["fairwatch-model.json", "fairwatch-overview.json"]
    for sub in ("datasources", "dashboards", "alerting"):
        assert list((REPO / "deploy" / "grafana" / "provisioning" / sub).glob("*.yml")), sub


@pytest.mark.parametrize("service, command", sorted(FAIRWATCH_SERVICES.items()))
def test_the_fairwatch_services_run_the_cli(service, command):
    spec = SERVICES[service]
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
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
