"""One spelling per concept across commands (fairwatch.flags); the old spellings are hidden aliases that still work."""
from __future__ import annotations

import pytest

from fairwatch.cli import build_parser

# (argv with the old spelling, argv with the new one, attribute they set, value)
ALIASES = [
    (["demo", "--port", "0"], ["demo", "--metrics-port", "0"], "metrics_port", 0),
    (["decide", "http://w:1/metrics", "--port", "9200"], ["decide", "http://w:1/metrics", "--metrics-port", "9200"],
     "metrics_port", 9200),
    (["decide", "http://w:1/metrics", "--addr", "0.0.0.0"], ["decide", "http://w:1/metrics", "--metrics-addr", "0.0.0.0"],
     "metrics_addr", "0.0.0.0"),
    (["replay", "f.jsonl", "--serve", "9108"], ["replay", "f.jsonl", "--metrics-port", "9108"], "metrics_port", 9108),
    (["produce", "f.jsonl", "--topic", "preds"], ["produce", "f.jsonl", "--predictions-topic", "preds"],
     "predictions_topic", "preds"),
    (["score", "f.csv", "--model-dir", "m", "--model-name", "credit"], ["score", "f.csv", "--model-dir", "m", "--model", "credit"],
     "model", "credit"),
    # one unit per concept: Kafka's client timeouts in milliseconds, as `run --session-timeout-ms`
    (["join", "--session-timeout-seconds", "2.5"], ["join", "--session-timeout-ms", "2500"], "session_timeout_ms", 2500),
    (["join", "--rebalance-timeout-seconds", "10"], ["join", "--rebalance-timeout-ms", "10000"],
     "rebalance_timeout_ms", 10000),
    # CSV columns end in -col; protected attributes are --attribute, repeatable
    (["replay", "f.csv", "--group", "sex"], ["replay", "f.csv", "--group-col", "sex"], "group_col", ["sex"]),
    (["finetune", "w.csv", "--model-dir", "m", "--out", "o", "--group", "race"],
     ["finetune", "w.csv", "--model-dir", "m", "--out", "o", "--group-col", "race"], "group_col", ["race"]),
    (["finetune", "w.jsonl", "--model-dir", "m", "--out", "o", "--attributes", "race,sex"],
     ["finetune", "w.jsonl", "--model-dir", "m", "--out", "o", "--attribute", "race", "--attribute", "sex"],
     "attribute", ["race", "sex"]),
    # the trigger's port takes webhooks and the scrape of /metrics: --listen-*
    (["trigger", "serve", "--host", "0.0.0.0"], ["trigger", "serve", "--listen-addr", "0.0.0.0"], "listen_addr",
     "0.0.0.0"),
    (["trigger", "serve", "--port", "9200"], ["trigger", "serve", "--listen-port", "9200"], "listen_port", 9200),
]


@pytest.mark.parametrize("old, new, attribute, value", ALIASES, ids=[" ".join(a[0][:1] + a[0][-2:-1]) for a in ALIASES])
def test_a_deprecated_alias_sets_the_canonical_flag_and_says_so(old, new, attribute, value, capsys) -> None:  # noqa: ANN001
    parser = build_parser()
    assert getattr(parser.parse_args(new), attribute) == value
    assert capsys.readouterr().err == ""
    assert vars(parser.parse_args(old)) == vars(parser.parse_args(new))
    err = capsys.readouterr().err
    old_flag = next(a for a in reversed(old) if a.startswith("--") and a not in new)
    assert f"{old_flag} is deprecated, use " in err and err.count("\n") == 1


@pytest.mark.parametrize("command, hidden", [
    (["demo"], "--port"), (["decide"], "--addr"), (["replay"], "--serve"), (["produce"], "--topic"),
    (["score"], "--model-name"), (["join"], "--session-timeout-seconds"), (["replay"], "--group"),
    (["finetune"], "--attributes"), (["trigger", "serve"], "--host"), (["trigger", "serve"], "--port"),
])
def test_aliases_are_hidden_from_help(command, hidden, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    out = capsys.readouterr().out
    assert hidden + " " not in out and hidden + "\n" not in out


def test_defaults_stay_what_they_were() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo"])
    assert (demo.metrics_port, demo.metrics_addr) == (9108, "127.0.0.1")
    decide = parser.parse_args(["decide", "http://w:1/metrics"])
    assert (decide.metrics_port, decide.metrics_addr) == (9109, "127.0.0.1")
    replay = parser.parse_args(["replay", "f.jsonl"])
    assert (replay.metrics_port, replay.metrics_addr) == (None, "127.0.0.1")
    from fairwatch.settings import from_args
    from fairwatch.consumers.kafka_config import CONNECTION_KEYS

    produce = parser.parse_args(["produce", "f.jsonl"])
    assert (produce.predictions_topic, produce.outcomes_topic) == (None, None)  # the [kafka] table wins
    kafka = from_args(produce, kafka_keys=CONNECTION_KEYS).kafka  # ... and without one, its struct's defaults
    assert (kafka.predictions_topic, kafka.outcomes_topic) == ("fairwatch.predictions", "fairwatch.outcomes")
    run = parser.parse_args(["run"])
    assert (run.metrics_port, run.metrics_addr, run.predictions_topic) == (None, None, None)  # the [kafka] table wins


@pytest.mark.parametrize("argv, progress", [
    (["replay", "f.jsonl"], False), (["replay", "f.jsonl", "--progress"], True),
    (["produce", "f.jsonl"], True), (["produce", "f.jsonl", "--no-progress"], False),
    (["finetune", "w.jsonl", "--model-dir", "m", "--out", "o"], True),
    (["finetune", "w.jsonl", "--model-dir", "m", "--out", "o", "--no-progress"], False),
])
def test_one_progress_flag_both_ways_on_every_command(argv, progress) -> None:  # noqa: ANN001
    assert build_parser().parse_args(argv).progress is progress


def test_every_visible_flag_has_a_help_line() -> None:
    import argparse

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}".strip())
            elif action.option_strings and action.help is None:
                missing.append(f"{name} {action.option_strings[0]}")

    walk(build_parser(), "")
    assert not missing, missing


def _subcommands(parser, path=()):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from _subcommands(subparser, (*path, name))


def _default_shown(action) -> bool:
    """The help of a flag says its default: the value itself (so that a changed default cannot leave the help
    behind), or for a flag without one, in parentheses, what happens when it is not given."""
    import argparse

    d, text = action.default, action.help or ""
    if (isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                            argparse._HelpAction, argparse._VersionAction))
            or text == argparse.SUPPRESS or action.required):
        return True
    if isinstance(action, argparse.BooleanOptionalAction) and d is not None:
        return ("(on)" if d else "(off)") in text
    if d is None or d == [] or d == argparse.SUPPRESS:
        return "(" in text
    forms = {str(d), f"{d:g}", f"{d:g}".replace("e-0", "e-")} if isinstance(d, float) else {str(d)}
    return any(form in text for form in forms) or "default" in text


def test_every_flag_shows_its_default() -> None:
    missing = [f"{' '.join(path)} {action.option_strings[0]} (default {action.default!r}): {action.help!r}"
               for path, parser in _subcommands(build_parser()) for action in parser._actions
               if action.option_strings and not _default_shown(action)]
    assert not missing, missing


def test_a_help_line_shows_the_default_of_the_settings_field_it_overrides() -> None:
    """Flags that default to None (the file wins) show the struct's default: one definition."""
    parser = build_parser()
    run = dict(_subcommands(parser))[("run",)]
    helps = {a.option_strings[0]: a.help for a in run._actions if a.option_strings}
    assert helps["--session-timeout-ms"].endswith("(10000)") and helps["--dlq-topic"].endswith("(fairwatch.dlq)")
    assert helps["--min-group-size"].endswith("(30)") and helps["--max-poll-interval-ms"].endswith("(300000)")


def test_every_subcommand_answers_help(capsys) -> None:
    for path, _ in _subcommands(build_parser()):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, "--help"])
        assert exit_.value.code == 0, path
        assert "usage: fairwatch" in capsys.readouterr().out, path


@pytest.mark.parametrize("argv", [["run"], ["join"], ["produce", "f.jsonl"],
                                  ["export", "--model", "m", "--from", "0", "--to", "1", "--out", "x"],
                                  ["trigger", "serve"], ["replay", "f.jsonl"], ["decide", "http://w:1/metrics"],
                                  ["rules", "render"], ["dashboards", "render"]])
def test_every_command_that_reads_kafka_or_the_settings_takes_config(argv) -> None:
    assert build_parser().parse_args([*argv, "--config", "f.toml"]).config == "f.toml"
