"""One settings document (fairwatch.settings): one file every command reads whole, one rule, one error line
naming the file and the table, flags over the file, and a configuration reference generated from the structs."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from fairwatch.cli import build_parser, main
from fairwatch.consumers.kafka_config import CONNECTION_KEYS
from fairwatch.monitor.config import ConfigError
from fairwatch.settings import TABLES, from_args, load_settings, parse_settings, reference

REPO = Path(__file__).resolve().parents[2]
EVENT = ('{"event_id": "e1", "ts": 1, "prediction": 1, "label": 1, "groups": {"sex": "F"}}\n')

# Top-level monitor keys beside [kafka] and [alerts]: what `fairwatch run` used to refuse.
TOP_LEVEL = """\
min_group_size = 40
privacy_floor = 5
[thresholds]
demographic_parity_difference = 0.2
[kafka]
group_id = "from-file"
bootstrap_servers = "127.0.0.1:1"
[alerts]
breach_for = "7m"
"""
WITH_TABLE = """\
[monitor]
min_group_size = 40
privacy_floor = 5
[monitor.thresholds]
demographic_parity_difference = 0.2
[kafka]
group_id = "from-file"
bootstrap_servers = "127.0.0.1:1"
[alerts]
breach_for = "7m"
"""


def test_the_committed_reference_is_what_the_structs_generate():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == reference(), "run `python -m fairwatch.settings --write docs/configuration.md`"


def test_every_field_of_every_table_has_a_description():
    from fairwatch.monitor.config import ThresholdOverride, Thresholds

    for struct in (*TABLES.values(), Thresholds, ThresholdOverride):
        assert set(struct.FIELD_HELP) == set(struct.__struct_fields__), struct.__name__
        assert all(line.strip() for line in struct.FIELD_HELP.values()), struct.__name__


def test_the_reference_refuses_a_field_without_a_description(monkeypatch):
    from fairwatch.alerts.rules import AlertSettings

    monkeypatch.setattr(AlertSettings, "FIELD_HELP", {k: v for k, v in AlertSettings.FIELD_HELP.items()
                                                      if k != "breach_for"})
    with pytest.raises(ValueError, match="breach_for"):
        reference()


def test_the_reference_shows_each_default_from_the_struct():
    text = reference()
    assert "| `decision_check_events` | integer (>= 1) | `4000` |" in text
    assert "| `session_timeout_ms` | integer (>= 1000, <= 3600000) | `10000` |" in text
    assert "| `breach_for` | string | `\"5m\"` |" in text


def _defaults() -> dict[str, object]:
    from fairwatch.monitor.config import Thresholds

    values: dict[str, object] = {}
    for struct in (*TABLES.values(), Thresholds):
        if struct.__name__ == "KafkaSettings":
            values.update({k: v for k, v in msgspec.to_builtins(struct()).items() if k != "client"})
        else:
            values.update(msgspec.to_builtins(struct()))
    return values


def test_numbers_the_docs_give_for_a_setting_are_its_default():
    """``name`` (N) or ``name`` = N in README/docs must say the default the code has (not a drifted copy)."""
    defaults = _defaults()
    wrong = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        if path.name == "configuration.md":
            continue
        text = path.read_text()
        for name, number in re.findall(r"`(\w+)`\s*(?:\(|=\s*)([\d][\d,._]*)(?=[)\s.,;])", text):
            if name in defaults and isinstance(defaults[name], (int, float)) and not isinstance(defaults[name], bool):
                if float(number.replace(",", "").replace("_", "").rstrip(".")) != float(defaults[name]):
                    wrong.append(f"{path.name}: `{name}` {number}, default {defaults[name]}")
    assert not wrong, wrong


@pytest.mark.parametrize("text", [TOP_LEVEL, WITH_TABLE], ids=["top-level keys", "[monitor] table"])
def test_one_rule_both_forms_give_the_same_settings(tmp_path, text):
    path = tmp_path / "fairwatch.toml"
    path.write_text(text)
    settings = load_settings(path)
    assert settings.monitor.min_group_size == 40 and settings.monitor.thresholds.demographic_parity_difference == 0.2
    assert settings.kafka.group_id == "from-file" and settings.alerts.breach_for == "7m"
    assert settings.source == str(path)


def test_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path):
    path = tmp_path / "fairwatch.toml"
    path.write_text(TOP_LEVEL)
    from fairwatch.consumers.run_command import SETTING_FLAGS

    args = build_parser().parse_args(["run", "--config", str(path), "--group-id", "from-flag",
                                      "--min-group-size", "50", "--attribute", "sex"])
    settings = from_args(args, kafka_keys=SETTING_FLAGS)
    assert settings.kafka.group_id == "from-flag"  # the flag
    assert settings.kafka.bootstrap_servers == "127.0.0.1:1"  # the file
    assert settings.kafka.dlq_topic == "fairwatch.dlq"  # the struct's default
    assert (settings.monitor.min_group_size, settings.monitor.privacy_floor) == (50, 5)
    assert settings.monitor.attributes == ["sex"]
    join = build_parser().parse_args(["join", "--config", str(path), "--predictions-topic", "p"])
    kafka = from_args(join, kafka_keys=CONNECTION_KEYS).kafka
    assert (kafka.bootstrap_servers, kafka.predictions_topic, kafka.outcomes_topic) == ("127.0.0.1:1", "p",
                                                                                       "fairwatch.outcomes")


def test_run_accepts_the_file_that_load_config_accepts(tmp_path, capsys):
    """The issue's case: top-level monitor keys plus [kafka] and [alerts]. `run` gets past the settings (to
    its own check of --rebuild-state, before any connection)."""
    path = tmp_path / "fairwatch.toml"
    path.write_text(TOP_LEVEL)
    assert main(["run", "--config", str(path), "--rebuild-state"]) == 2
    assert "--rebuild-state needs --state-dir" in capsys.readouterr().err


def test_every_command_reads_the_same_file(tmp_path, capsys):
    path = tmp_path / "fairwatch.toml"
    path.write_text(TOP_LEVEL)
    data = tmp_path / "e.jsonl"
    data.write_text(EVENT)
    assert main(["replay", str(data), "--config", str(path), "--report", "json"]) == 0
    assert '"min_group_size": 40' in capsys.readouterr().out
    assert main(["rules", "render", "--config", str(path), "--output", "-"]) == 0
    rules = capsys.readouterr().out
    assert "for: 7m" in rules and ">= 40" in rules  # [alerts] breach_for and the top-level min_group_size
    assert main(["dashboards", "render", "--config", str(path), "--out", str(tmp_path / "d")]) == 0
    assert "for: 7m" in (tmp_path / "d" / "fairwatch-alerting.yml").read_text()


def test_a_monitor_table_with_stray_top_level_keys_is_refused():
    with pytest.raises(ConfigError, match=r"^f.toml: min_group_size: a top-level key beside a \[monitor\] table"):
        parse_settings({"monitor": {}, "min_group_size": 3}, source="f.toml")


# -- malformed files, through the real command line: one line, exit 2, the file and the table named ----------

BAD = {
    "unknown table": ("[kafak]\ngroup_id = 'x'\n", "bad.toml: unknown table [kafak]"),
    "unknown table beside [monitor]": ("[monitor]\n[alert]\nx = 1\n", "bad.toml: alert: a top-level table"),
    "unknown [monitor] key": ("[monitor]\nmin_group = 3\n", "bad.toml: [monitor]: Object contains unknown field `min_group`"),
    "unknown top-level key": ("min_group = 3\n", "bad.toml: [monitor]: Object contains unknown field `min_group`"),
    "unknown threshold": ("[monitor.thresholds]\nparity = 0.1\n", "bad.toml: [monitor]: Object contains unknown field `parity`"),
    "unknown [kafka] key": ("[kafka]\ngroup = 'x'\n", "bad.toml: [kafka]: Object contains unknown field `group`"),
    "unknown [alerts] key": ("[alerts]\nfor = '5m'\n", "bad.toml: [alerts]: Object contains unknown field `for`"),
    "wrong type in [monitor]": ("min_group_size = 'big'\n", "bad.toml: [monitor]: Expected `int`, got `str` - at `$.min_group_size`"),
    "wrong type in [kafka]": ("[kafka]\nmax_poll_records = 'many'\n", "bad.toml: [kafka]: Expected `int`, got `str` - at `$.max_poll_records`"),
    "wrong type in [alerts]": ("[alerts]\ninvalid_ratio = 'some'\n", "bad.toml: [alerts]: Expected `float`, got `str` - at `$.invalid_ratio`"),
    "bad value in [alerts]": ("[alerts]\nbreach_for = 'soon'\n", "bad.toml: [alerts]: breach_for = 'soon' is not a Prometheus duration"),
    "[kafka] not a table": ("kafka = 5\n", "bad.toml: [kafka]: must be a table, got int"),
    "invalid TOML": ("[monitor\n", "bad.toml: not valid TOML"),
}


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    data = tmp_path / "e.jsonl"
    data.write_text(EVENT)
    return {
        "replay": ["replay", str(data)],
        "run": ["run"],
        "rules": ["rules", "render", "--output", str(tmp_path / "r.yml")],
        "dashboards": ["dashboards", "render", "--out", str(tmp_path / "d")],
        "decide": ["decide", "http://127.0.0.1:1/metrics", "--rounds", "1"],
        "join": ["join"],
        "produce": ["produce", str(data)],
        "export": ["export", "--model", "m", "--from", "0", "--to", "1", "--out", str(tmp_path / "x.jsonl")],
        "trigger": ["trigger", "serve", "--db", str(tmp_path / "i.sqlite")],
    }


@pytest.mark.parametrize("case", list(BAD))
def test_a_malformed_file_stops_every_command_in_one_line(tmp_path, monkeypatch, capsys, case):
    monkeypatch.setenv("FAIRWATCH_TRIGGER_TOKEN", "t")
    monkeypatch.chdir(tmp_path)
    text, expected = BAD[case]
    (tmp_path / "bad.toml").write_text(text)
    for name, argv in _commands(tmp_path).items():
        assert main([*argv, "--config", "bad.toml"]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert expected in err, (name, err)
        assert err.startswith(f"fairwatch {argv[0]}: error: "), (name, err)
    assert not (tmp_path / "i.sqlite").exists()  # the trigger refused before creating its store


def test_a_missing_file_is_one_line_on_every_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAIRWATCH_TRIGGER_TOKEN", "t")
    for name, argv in _commands(tmp_path).items():
        assert main([*argv, "--config", str(tmp_path / "nope.toml")]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"config file {tmp_path / 'nope.toml'} does not exist" in err, (name, err)


def test_a_kafka_check_names_the_file_and_the_table(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[kafka]\nsecurity_protocol = 'SASL_SSL'\n")
    assert main(["run", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'bad.toml'}: [kafka]: --security-protocol SASL_SSL needs" in err


def test_a_kafka_table_a_replay_does_not_use_is_validated_but_not_checked_against_the_machine(tmp_path, capsys):
    """A missing certificate stops the Kafka commands, not a replay of a file on the same config."""
    path = tmp_path / "c.toml"
    path.write_text("[kafka]\nsecurity_protocol = 'SSL'\nssl_cafile = '/no/such/ca.pem'\n")
    data = tmp_path / "e.jsonl"
    data.write_text(EVENT)
    assert main(["replay", str(data), "--config", str(path)]) == 0
    capsys.readouterr()
    assert main(["run", "--config", str(path)]) == 2
    assert "[kafka]: --ssl-cafile /no/such/ca.pem: no such file" in capsys.readouterr().err


def test_a_lexicon_attribute_flag_leaves_the_monitor_attributes_alone(tmp_path):
    """probe's and finetune's --attribute name lexicon attributes: a shared file's [monitor] stays as written."""
    import argparse

    from fairwatch.settings import from_args

    path = tmp_path / "shared.toml"
    path.write_text('[monitor]\nattributes = ["race", "sex"]\nintersections = [["race", "sex"]]\n')
    settings = from_args(argparse.Namespace(config=str(path), attribute=["gender"]))
    assert settings.monitor.attributes == ["race", "sex"]
    assert settings.monitor.intersections == [["race", "sex"]]


def test_a_protocol_flag_replaces_the_files_protocol_and_drops_its_other_familys_keys(tmp_path):
    path = tmp_path / "fairwatch.toml"
    path.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
                    'sasl_username = "u"\n')
    settings = load_settings(path)
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    plain = settings.with_kafka(security_protocol="PLAINTEXT").kafka
    assert (plain.security_protocol, plain.sasl_mechanism, plain.sasl_username) == ("PLAINTEXT", None, None)
    # A file that mixes them is still refused as written: only a flag's protocol replaces the family.
    path.write_text('[kafka]\nsecurity_protocol = "PLAINTEXT"\nsasl_mechanism = "PLAIN"\n')
    with pytest.raises(ConfigError, match="sasl"):
        load_settings(path).with_kafka(group_id="g")
