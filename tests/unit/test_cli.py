"""The command line as users meet it: bad files, bad flags, bad config; reports."""

from __future__ import annotations

import json

import pytest
from helpers import replay_json, run_cli


def good(i, label=None, **groups):
    return json.dumps({"event_id": f"e{i}", "ts": 1_795_000_000 + i, "prediction": i % 2, "score": (i % 10) / 10,
                       "groups": groups or {"sex": "F" if i % 3 else "M"}, "label": label})


def test_replay_of_a_messy_jsonl_file_keeps_every_valid_event(tmp_path):
    lines = [good(i, label=i % 2) for i in range(50)]
    lines[5:5] = [
        '{"event_id": "t1", "prediction": 1, "groups": {"sex": "F"',  # truncated
        '{"event_id": "w1", "prediction": "yes", "groups": {"sex": "F"}}',  # wrong type
        '{"prediction": 1, "groups": {"sex": "F"}}',  # missing event_id
        '{"event_id": "h1", "prediction": 1, "groups": {"sex": "F"}, "text": "' + "x" * 2_000_000 + '"}',  # huge
        good(3, label=1),  # duplicate of e3
        '{"event_id": "u1", "prediction": 1, "groups": {"sex": "F"}, "label": 5}',  # unknown label
        "",  # blank lines are skipped, not counted
        "\x00\x01 binary garbage",
    ]
    path = tmp_path / "messy.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = replay_json(path)
    assert report["events"] == 50
    assert report["duplicates"] == 1
    assert report["invalid"] == 6
    assert report["invalid_reasons"] == {"not_json": 2, "wrong_type": 1, "missing_field": 1, "oversized": 1,
                                         "unknown_label": 1}
    messages = [s["message"] for s in report["rejection_samples"]]
    assert any(m.startswith("line 6:") for m in messages)  # line numbers point into the file
    assert sum(g["n"] for g in report["attributes"]["sex"]["groups"].values()) == 50


def test_replay_csv_with_bad_rows_and_empty_labels(tmp_path):
    path = tmp_path / "rows.csv"
    rows = ["id,score,y,grp"] + [f"{i},{i % 10},{i % 2},{'a' if i % 2 else 'b'}" for i in range(40)]
    rows += ["x1,notanumber,1,a", "x2,5,7,a", "x3,5,,a", ",5,1,a", "x5,5,1"]
    path.write_text("\n".join(rows) + "\n")
    report = replay_json(path, "--id-col", "id", "--score-col", "score", "--threshold", "5",
                         "--label-col", "y", "--group-col", "grp")
    assert report["events"] == 41  # 40 + x3, whose empty label means "not known yet"
    assert report["invalid_reasons"] == {"wrong_type": 1, "unknown_label": 1, "missing_field": 2}
    a = report["attributes"]["grp"]["groups"]["a"]
    assert a["n"] == 21 and a["labeled"] == 20


@pytest.mark.parametrize(
    "args, words",
    [
        (["replay", "/no/such/file.jsonl"], "no such file"),
        (["replay", "x.txt"], "pass --format"),
        (["replay", "--threshold", "abc", "f.jsonl"], "is not a number"),
        (["replay", "f.jsonl", "--report", "xml"], "invalid choice"),
        (["replay", "f.jsonl", "--config", "/no/such.toml"], "does not exist"),
        (["frobnicate"], "invalid choice"),
        (["demo", "--events", "5"], "at least 1000"),
    ],
)
def test_bad_invocations_exit_2_with_one_line(args, words):
    result = run_cli(*args)
    assert result.returncode == 2
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_csv_mapping_errors_are_one_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,p,g\n1,1,a\n")
    result = run_cli("replay", path, "--prediction-col", "p", "--group-col", "race")
    assert result.returncode == 2 and "no column 'race'" in result.stderr
    result = run_cli("replay", path, "--group-col", "g")
    assert result.returncode == 2 and "--prediction-col" in result.stderr


def test_bad_config_file_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[monitor]\nmin_group_size = 'big'\n")
    data = tmp_path / "e.jsonl"
    data.write_text(good(1) + "\n")
    result = run_cli("replay", data, "--config", config)
    assert result.returncode == 2 and "min_group_size" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    config.write_text("[monitor\n")
    result = run_cli("replay", data, "--config", config)
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def test_config_file_settings_apply(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[monitor]\nmin_group_size = 2\nprivacy_floor = 1\nintersections = [['sex', 'age']]\n")
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(good(i, sex="F" if i % 2 else "M", age="old") for i in range(6)) + "\n")
    report = replay_json(data, "--config", config)
    assert report["min_group_size"] == 2
    assert set(report["attributes"]["sex&age"]["groups"]) == {"F&old", "M&old"}


def test_table_report_marks_small_groups(compas_csv):
    from helpers import COMPAS_FLAGS

    result = run_cli("replay", compas_csv, *COMPAS_FLAGS, "--group-col", "race")
    assert result.returncode == 0
    assert "Native American+" in result.stdout
    assert "below the minimum group size (30)" in result.stdout
    assert "0.448 [0.43,0.47]" in result.stdout  # African-American FPR with its interval


@pytest.mark.slow
def test_demo_detects_the_injected_shift():
    result = run_cli("demo", "--events", "100000", "--no-serve", "--report", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    detection = report["demo"]["detection"]
    assert detection is not None and detection["attribute"] == "race"
    assert 0 < detection["predictions_after_shift"] < 20_000
    assert detection["after"] > detection["before"]
    assert report["demo"]["changes_before_shift"] == 0
    breach = report["demo"]["breach"]
    assert breach["attribute"].startswith("race") and breach["lower"] > breach["threshold"]
    assert 0 < breach["predictions_after_shift"] < 20_000
    assert report["demo"]["breaches_before_shift"] == 0
