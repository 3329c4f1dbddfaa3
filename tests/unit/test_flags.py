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
]


@pytest.mark.parametrize("old, new, attribute, value", ALIASES, ids=[" ".join(a[0][:1] + a[0][-2:-1]) for a in ALIASES])
def test_a_deprecated_alias_sets_the_canonical_flag_and_says_so(old, new, attribute, value, capsys) -> None:  # noqa: ANN001
    parser = build_parser()
    assert getattr(parser.parse_args(new), attribute) == value
    assert capsys.readouterr().err == ""
    assert vars(parser.parse_args(old)) == vars(parser.parse_args(new))
    err = capsys.readouterr().err
    assert f"{old[-2]} is deprecated, use {new[-2]}" in err


@pytest.mark.parametrize("command, hidden", [
    (["demo"], "--port"), (["decide"], "--addr"), (["replay"], "--serve"), (["produce"], "--topic"),
    (["score"], "--model-name"),
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
