"""The join's group settings: safe defaults for a loaded machine, the poll interval apart from the rebalance
timeout, the not-ready watch, and the flags' malformed values."""

from __future__ import annotations

import logging

import pytest

from fairwatch.cli import main
from fairwatch.command_support import EXIT_USAGE
from fairwatch.consumers.outcome_join import JoinSettings, ReadyWatch, heartbeat_interval


def test_defaults_are_kafkas_and_the_poll_interval_is_far_above_a_slow_batch():
    settings = JoinSettings()
    assert settings.session_timeout_seconds == 45.0  # Kafka's session.timeout.ms
    assert settings.max_poll_interval_seconds == 300.0  # Kafka's max.poll.interval.ms
    assert settings.rebalance_timeout_seconds == 60.0  # Faust's
    # The stall seen under load: a 10 s poll interval, met by a CPU-starved loop, left the group for good.
    assert settings.max_poll_interval_seconds >= 10 * settings.session_timeout_seconds / 1.5
    assert heartbeat_interval(45.0) == 3.0 and heartbeat_interval(6.0) == 1.2 and heartbeat_interval(1.0) == 0.5


def test_the_app_takes_the_poll_interval_as_set_not_from_the_rebalance_timeout():
    pytest.importorskip("faust", reason="the kafka extra (faust-streaming) is not installed")
    from fairwatch.consumers.outcome_join import JoinMetrics, build_app

    app = build_app(JoinSettings(bootstrap_servers="127.0.0.1:1", partitions=2, session_timeout_seconds=6.0,
                                 rebalance_timeout_seconds=10.0), JoinMetrics())
    assert app.conf.broker_max_poll_interval == 300.0
    assert app.conf.broker_session_timeout == 6.0
    assert app.conf.broker_rebalance_timeout == 10.0
    assert app.conf.broker_heartbeat_interval == 1.2
    app = build_app(JoinSettings(bootstrap_servers="127.0.0.1:1", partitions=2, max_poll_interval_seconds=900.0),
                    JoinMetrics())
    assert app.conf.broker_max_poll_interval == 900.0
    assert app.conf.broker_session_timeout == 45.0


@pytest.mark.parametrize("flag, value", [("--max-poll-interval-ms", "0"), ("--max-poll-interval-ms", "-5"),
                                         ("--stall-warning-seconds", "0"), ("--session-timeout-ms", "0")])
def test_a_non_positive_setting_is_one_usage_line(flag, value, capsys):
    pytest.importorskip("faust", reason="the kafka extra (faust-streaming) is not installed")
    assert main(["join", "--bootstrap-servers", "127.0.0.1:1", "--outcomes-topic", "o", flag, value]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag.split("-ms")[0].split("-seconds")[0] in err, err


@pytest.mark.parametrize("flags, words", [
    (("--labeled-topic", "bad topic"), "Expected a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-', not '.' or '..') - "
                                       "at `$.labeled_topic`"),
    (("--app-id", ""), "Expected `str` of length >= 1 - at `$.app_id`"),
    (("--session-timeout-ms", "4000000"), "Expected `int` <= 3600000 - at `$.session_timeout_ms`"),
    (("--max-poll-interval-ms", "100000000"), "Expected `int` <= 86400000 - at `$.max_poll_interval_ms`"),
])
def test_a_name_kafka_refuses_or_a_timeout_past_its_range_is_one_line_before_connecting(flags, words, capsys):
    pytest.importorskip("faust", reason="the kafka extra (faust-streaming) is not installed")
    assert main(["join", "--bootstrap-servers", "127.0.0.1:1", "--outcomes-topic", "o", *flags]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("value", ["abc", "1.5", ""])
def test_a_malformed_poll_interval_is_rejected_by_the_parser(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["join", "--max-poll-interval-ms", value])
    assert exc.value.code == 2
    assert "--max-poll-interval-ms" in capsys.readouterr().err


def test_not_ready_past_the_limit_is_one_warning_then_one_line_when_ready_again(caplog):
    now = [0.0]
    watch = ReadyWatch(10.0, lambda: "member none (dropped from the group)", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="fairwatch.join"):
        for t, ready in [(0, True), (1, False), (5, False), (10.9, False)]:
            now[0] = t
            watch.check(ready)
        assert not caplog.records, "not ready for 9.9 s of a 10 s limit: no warning yet"
        for t in (11.0, 12.0, 30.0):
            now[0] = t
            watch.check(False)
        (warning,) = caplog.records  # once, not at every check
        assert warning.levelno == logging.WARNING and "\n" not in warning.getMessage()
        assert "not ready for 10 s" in warning.getMessage() and "dropped from the group" in warning.getMessage()
        now[0] = 31.0
        watch.check(True)
        assert caplog.records[-1].levelno == logging.INFO and "ready again after 30 s" in caplog.records[-1].getMessage()
        caplog.clear()
        for t in (40.0, 45.0):  # a later short rebalance does not warn: the clock restarted
            now[0] = t
            watch.check(False)
        assert not caplog.records


def test_the_flags_default_to_the_join_table_and_the_exit_is_opt_in():
    from fairwatch.cli import build_parser
    from fairwatch.settings import from_args

    options = from_args(build_parser().parse_args(["join"])).join
    defaults = JoinSettings()
    assert options.max_poll_interval_ms == 300000 and options.session_timeout_ms == 45000
    assert options.rebalance_timeout_ms == 60000
    assert options.stall_warning_seconds == defaults.stall_warning_seconds and options.exit_on_stall is False
    assert defaults.max_poll_interval_seconds == options.max_poll_interval_ms / 1000
    assert build_parser().parse_args(["join", "--exit-on-stall"]).exit_on_stall is True


def test_the_join_table_of_the_file_is_read_and_a_flag_wins(tmp_path):
    from fairwatch.cli import build_parser
    from fairwatch.consumers.join_config import JOIN_FLAG_KEYS
    from fairwatch.settings import from_args

    path = tmp_path / "fairwatch.toml"
    path.write_text('[kafka]\noutcomes_topic = "o"\n[join]\nttl_seconds = 3600\nmax_poll_interval_ms = 600000\n'
                    'exit_on_stall = true\nlabeled_topic = "l"\n')
    args = build_parser().parse_args(["join", "--config", str(path), "--max-poll-interval-ms", "900000"])
    settings = from_args(args).with_join(**{key: getattr(args, key) for key in JOIN_FLAG_KEYS})
    join = settings.join
    assert (join.ttl_seconds, join.max_poll_interval_ms, join.exit_on_stall, join.labeled_topic) == (
        3600.0, 900000, True, "l")
    assert settings.kafka.outcomes_topic == "o"


@pytest.mark.parametrize("table, expected", [
    ("[join]\nttl_seconds = 0\n", "[join]: Expected `float` > 0.0 - at `$.ttl_seconds`"),
    ("[join]\nmax_poll_interval_ms = 1.5\n", "[join]: Expected `int`, got `float` - at `$.max_poll_interval_ms`"),
    ("[join]\nttl = 5\n", "[join]: Object contains unknown field `ttl`"),
    ("[join]\ncommit_interval_seconds = inf\n", "[join]: Expected `float` <= 315360000.0"),
    ("[join]\nauto_offset_reset = \"first\"\n", "[join]: Invalid enum value 'first'"),
    ("join = 3\n", "[join]: must be a table"),
])
def test_a_malformed_join_table_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, table, expected):
    path = tmp_path / "bad.toml"
    path.write_text(table)
    assert main(["join", "--config", str(path), "--outcomes-topic", "o"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and expected in err, err
