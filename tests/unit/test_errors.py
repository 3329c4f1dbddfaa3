"""One error hierarchy: every user-facing error is a FairwatchError, turned into one line in one place,
and nothing below the command line imports it."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import pkgutil
import tomllib
from pathlib import Path

import pytest
from helpers import REPO, run_cli

import fairwatch
from fairwatch.command_support import run_command
from fairwatch.monitor.errors import EXIT_USAGE, FairwatchError, UsageError

# Exceptions that are deliberately not FairwatchErrors, each with the reason.
NOT_USER_ERRORS = {
    "fairwatch.consumers.kafka_worker.ApplyFailed":
        "a bug in the pipeline stops the worker; `fairwatch run` reports it itself with exit status 1",
    "fairwatch.alerts.trigger.AlertInFlight":
        "internal to the trigger: a copy of an alert still being handled is answered 500, to be delivered again",
    "fairwatch.decide.ScrapeError":
        "internal to decide: a worker it cannot use skips the round with one line, and the loop goes on",
    "fairwatch.consumers.fetch_process.FetchProcessDied":
        "internal to the worker: it replaces the fetch process and goes on",
    "fairwatch.consumers.dead_letters.DeadLettersStuck":
        "a broker that keeps refusing dead letters is a worker failure, not a user mistake: its traceback is wanted",
    "fairwatch.consumers.dead_letters.DeadLettersUndelivered":
        "the broker refused a dead letter: the worker stops; `fairwatch run` reports it itself with exit status 1",
}


def _modules() -> list[str]:
    """Every module the wheel installs: the packages pyproject.toml lists (the folders map onto
    ``fairwatch.*``, so walking ``fairwatch.__path__`` alone would miss them) and their modules."""
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    names = []
    for package in packages:
        names.append(package)
        path = importlib.import_module(package).__path__
        names.extend(f"{package}.{info.name}" for info in pkgutil.iter_modules(path) if not info.ispkg)
    return names


def _exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for name in _modules():
        if name == "fairwatch.__main__":
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name
                    and not attr.startswith("_")):
                found[f"{name}.{attr}"] = value
    return found


def test_every_public_exception_of_the_package_is_a_fairwatch_error():
    found = _exceptions()
    assert len(found) >= 20, sorted(found)  # the walk reached the adapters, not just the core
    stray = sorted(name for name, cls in found.items()
                   if not issubclass(cls, FairwatchError) and name not in NOT_USER_ERRORS)
    assert not stray, f"user-facing errors that are not FairwatchErrors (or list them with a reason): {stray}"
    stale = sorted(set(NOT_USER_ERRORS) - set(found))
    assert not stale, f"allow-list entries naming no exception: {stale}"
    for name in NOT_USER_ERRORS:
        assert not issubclass(found[name], FairwatchError), f"{name} is a FairwatchError now: drop it from the list"


def test_errors_keep_the_builtin_base_their_callers_catch():
    from fairwatch.alerts.finetune import FinetuneInputError
    from fairwatch.consumers.kafka_clients import ClientMissing
    from fairwatch.monitor.config import ConfigError
    from fairwatch.monitor.scorer.model import ModelLoadError

    assert issubclass(ConfigError, ValueError)
    assert issubclass(FinetuneInputError, UsageError) and issubclass(FinetuneInputError, ValueError)
    assert issubclass(ClientMissing, ImportError)
    assert issubclass(ModelLoadError, RuntimeError)
    assert fairwatch.FairwatchError is FairwatchError and "FairwatchError" in fairwatch.__all__


def _imports_cli(path: Path, module: str) -> list[int]:
    """Line numbers where ``module`` (its file at ``path``) imports fairwatch.cli, lazily or not."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(t == "fairwatch.cli" or t.startswith("fairwatch.cli.") for t in targets):
            lines.append(node.lineno)
    return sorted(lines)


def test_nothing_but_the_entry_point_imports_the_command_line():
    offenders = {}
    for name in _modules():
        spec = importlib.util.find_spec(name)
        path = Path(spec.origin)
        if name in ("fairwatch.cli", "fairwatch.__main__") or path.suffix != ".py":
            continue
        if lines := _imports_cli(path, name):
            offenders[name] = lines
    assert not offenders, f"import helpers from fairwatch.command_support, not fairwatch.cli: {offenders}"


def test_the_import_check_sees_a_relative_and_a_lazy_import(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from ..cli import main\n\nfrom fairwatch import cli\n")
    assert _imports_cli(source, "fairwatch.consumers.mod") == [2, 4]
    source.write_text("from fairwatch.command_support import UsageError\nfrom . import clients\n")
    assert _imports_cli(source, "fairwatch.consumers.mod") == []


def _args(handler) -> argparse.Namespace:
    return argparse.Namespace(command="thing", handler=handler)


def test_run_command_turns_any_fairwatch_error_into_one_line_and_its_exit_status(capsys):
    from fairwatch.consumers.state import StateError

    def fail(_args):
        raise StateError("snapshot taken under other settings\n(second line)")

    assert run_command(_args(fail)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("fairwatch thing: error: snapshot taken under other settings")

    class Custom(FairwatchError):
        exit_code = 3

    def custom(_args):
        raise Custom("custom")

    assert run_command(_args(custom)) == 3
    assert capsys.readouterr().err == "fairwatch thing: error: custom\n"


def test_a_programming_error_keeps_its_traceback():
    def bug(_args):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command(_args(bug))


def test_adapter_errors_reach_the_user_as_one_line(tmp_path):
    """Errors the commands no longer convert by hand: a bad time window (TimeWindowError), an unknown
    incident (IncidentError), a bad lexicon (LexiconError)."""
    export = run_cli("export", "--model", "m", "--from", "yesterday-ish", "--to", "2026-01-01T00:00:00Z",
                     "--out", tmp_path / "w.jsonl")
    assert export.returncode == EXIT_USAGE, export.stderr
    assert export.stderr.startswith("fairwatch export: error: ") and export.stderr.count("\n") == 1, export.stderr
    assert "Traceback" not in export.stderr

    from fairwatch.alerts.incidents import IncidentStore

    IncidentStore(tmp_path / "incidents.db").list(None)  # creates the store
    show = run_cli("incidents", "--db", tmp_path / "incidents.db", "show", "999")
    assert show.returncode == EXIT_USAGE, show.stderr
    assert show.stderr.startswith("fairwatch incidents: error: ") and show.stderr.count("\n") == 1, show.stderr

    (tmp_path / "lexicon.json").write_text("{not json")
    (tmp_path / "texts.csv").write_text("text\nhello\n")
    score = run_cli("score", tmp_path / "texts.csv", "--lexicon", tmp_path / "lexicon.json",
                    "--model-dir", tmp_path)
    assert score.returncode == EXIT_USAGE, score.stderr
    assert score.stderr.startswith("fairwatch score: error: ") and score.stderr.count("\n") == 1, score.stderr
