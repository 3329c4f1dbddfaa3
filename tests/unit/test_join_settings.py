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


def test_the_flags_default_to_the_settings_and_the_exit_is_opt_in():
    from fairwatch.cli import build_parser

    args = build_parser().parse_args(["join"])
    defaults = JoinSettings()
    assert args.max_poll_interval_ms == 300000 and args.session_timeout_ms == 45000
    assert args.rebalance_timeout_ms == 60000
    assert args.stall_warning_seconds == defaults.stall_warning_seconds and args.exit_on_stall is False
    assert build_parser().parse_args(["join", "--exit-on-stall"]).exit_on_stall is True
