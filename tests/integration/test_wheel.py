"""The wheel as users install it: one import package with every asset the commands need, the core's import
contract checked on the installed tree, and the render commands writing where they are told."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from the checkout, installed in a fresh venv outside it (its dependencies are taken from
    the test environment through a path entry, so nothing is downloaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what git would commit: a build/ folder left in the checkout could add stale files.
    source = tmp / "source"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("fairwatch-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", site,
                    str(wheel)], check=True, capture_output=True)
    # The test environment's packages, appended after the fresh site-packages (its .pth files, such as the
    # checkout's editable install, are not processed from a plain path entry).
    with open(os.path.join(site, "dependencies.pth"), "w") as pth:
        pth.write(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, python, site, tmp


def run(python, *args, cwd):
    return subprocess.run([str(python), "-m", "fairwatch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_the_wheel_holds_one_package_and_its_assets(installed):
    wheel, _, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"fairwatch", next(n.split("/")[0] for n in names
                                                                  if ".dist-info/" in n)}
    for asset in ("fairwatch/alerts/rules/fairwatch.rules.yml", "fairwatch/alerts/alertmanager.yml",
                  "fairwatch/dashboards/json/fairwatch-model.json", "fairwatch/dashboards/json/fairwatch-overview.json",
                  "fairwatch/deploy/Dockerfile", "fairwatch/deploy/prometheus/prometheus.yml",
                  "fairwatch/deploy/grafana/provisioning/datasources/prometheus.yml",
                  "fairwatch/monitor/scorer/lexicons/gender.json"):
        assert asset in names, asset


def test_the_installed_commands_run_outside_the_checkout(installed):
    _, python, site, tmp = installed
    work = tmp / "work"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import fairwatch; print(fairwatch.__file__)"], capture_output=True,
                           text=True, cwd=work, check=True).stdout
    assert where.startswith(site), where
    demo = run(python, "demo", "--events", "20000", cwd=work)
    assert demo.returncode == 0, demo.stderr
    assert "demographic_parity" in demo.stdout
    rules = run(python, "rules", "render", "--out", "rendered", cwd=work)
    assert rules.returncode == 0, rules.stderr
    assert (work / "rendered" / "fairwatch.rules.yml").read_text() == (REPO / "alerts/rules/fairwatch.rules.yml").read_text()
    boards = run(python, "dashboards", "render", "--out", "boards", cwd=work)
    assert boards.returncode == 0, boards.stderr
    assert sorted(p.name for p in (work / "boards").iterdir()) == [
        "fairwatch-alerting.yml", "fairwatch-model.json", "fairwatch-overview.json"]
    assert not list(work.glob("*.pyc")) and sorted(p.name for p in work.iterdir()) == ["boards", "rendered"]


def test_the_core_imports_no_adapter_nor_the_command_line(installed):
    """import-linter on the installed tree (in the checkout the subpackages live in sibling folders, which
    its graph builder does not follow): the core imports no adapter, and nothing but the entry point imports
    the command line."""
    _, python, site, tmp = installed
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run([str(python), lint, "--config", str(REPO / "pyproject.toml")], capture_output=True,
                            text=True, cwd=tmp, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert len(contracts) == 2 and f"{len(contracts)} kept, 0 broken" in result.stdout, result.stdout
    for contract in contracts:
        assert f"{contract['name']} KEPT" in result.stdout, result.stdout
