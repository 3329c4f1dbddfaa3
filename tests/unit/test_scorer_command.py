"""`fairwatch score`: the register()'d subcommand, good and bad input."""
from __future__ import annotations

import json

import pytest

from fairwatch.cli import build_parser, run_command


def run(argv: list[str]) -> int:
    """The command as `fairwatch` runs it (its error handling included), in-process."""
    return run_command(build_parser().parse_args(argv))


@pytest.fixture()
def csv_file(tmp_path):  # noqa: ANN001, ANN201
    p = tmp_path / "in.csv"
    p.write_text('id,text\n1,my son is kind\n2,\n3,"she said hello"\n4,the muslim teacher\n')
    return p


def test_jsonl_output_skips_bad_rows(tiny_model_dirs, csv_file, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "out.jsonl"
    rc = run(["score", str(csv_file), "--model-dir", str(tiny_model_dirs["keys"]), "--device", "cpu", "-o", str(out), "--batch-size", "2"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rc == 0
    assert [r["row"] for r in rows] == [1, 3, 4]
    assert rows[0]["flipped"] is True and rows[0]["n_variants"] >= 1
    assert "skipped 1 bad row" in capsys.readouterr().err


def test_summary_from_jsonl_with_bad_lines(tiny_model_dirs, tmp_path, capsys) -> None:  # noqa: ANN001
    p = tmp_path / "in.jsonl"
    p.write_text('{"t": "my son is kind"}\nnot json\n{"other": 1}\n{"t": "her book is good"}\n')
    rc = run(["score", str(p), "--text-col", "t", "--model-dir", str(tiny_model_dirs["keys"]), "--device", "cpu", "--format", "summary"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "gender" in cap.out and "flip_rate" in cap.out and "son" in cap.out
    assert "skipped 2 bad row" in cap.err


@pytest.mark.parametrize("case", ["missing_file", "missing_column", "bad_model_dir", "bad_lexicon", "bad_format"])
def test_bad_input_one_line_exit_2(case: str, tiny_model_dirs, csv_file, tmp_path, capsys) -> None:  # noqa: ANN001
    model = str(tiny_model_dirs["random"])
    argv = ["score", str(csv_file), "--model-dir", model, "--device", "cpu"]
    if case == "missing_file":
        argv[1] = str(tmp_path / "nope.csv")
    elif case == "missing_column":
        argv += ["--text-col", "comment"]
    elif case == "bad_model_dir":
        argv[3] = str(tmp_path)
    elif case == "bad_lexicon":
        lex = tmp_path / "lex.json"
        lex.write_text("{not json")
        argv += ["--lexicon", str(lex)]
    elif case == "bad_format":
        other = tmp_path / "in.parquet"
        other.write_text("x")
        argv[1] = str(other)
    rc = run(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("fairwatch score: error:")


def test_jsonl_counts_variants_per_attribute(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon

    texts = ["Muslims are bad and Jews too", "Mary said she left", "hello there"]
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out.jsonl"
    assert run(["score", str(p), "--model-dir", str(tiny_model_dirs["random"]), "--device", "cpu", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    gen = CounterfactualGenerator(Lexicon.default())
    for text, row in zip(texts, rows):
        expected = {a: len(v) for a, v in gen.variants(text).items()}
        assert row["variants_by_attribute"] == expected
        assert sum(expected.values()) == row["n_variants"]
    assert rows[0]["variants_by_attribute"]["religion"] > 5 and rows[1]["variants_by_attribute"]["gender"] == 1
    assert rows[2]["variants_by_attribute"] == {}


def _one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("fairwatch score: error:"), err
    return errors[0]


@pytest.mark.parametrize("length", ["-5", "0", "2"])
def test_max_length_without_room_for_the_text_is_refused(length, tiny_model_dirs, csv_file, capsys) -> None:  # noqa: ANN001
    # -5 used to score every text as if it were empty, with exit 0.
    with pytest.raises(SystemExit) as exit_:
        run(["score", str(csv_file), "--model-dir", str(tiny_model_dirs["keys"]), "--device", "cpu",
             "--max-length", length])
    assert exit_.value.code == 2
    assert "leaves no room for the text" in _one_error_line(capsys.readouterr().err)


def test_max_length_past_the_models_positions_is_refused(tiny_model_dirs, csv_file, capsys) -> None:  # noqa: ANN001
    import json as json_

    positions = json_.loads((tiny_model_dirs["keys"] / "config.json").read_text())["max_position_embeddings"]
    rc = run(["score", str(csv_file), "--model-dir", str(tiny_model_dirs["keys"]), "--device", "cpu",
              "--max-length", str(positions + 1)])
    assert rc == 2
    assert f"more than this model takes ({positions} tokens)" in _one_error_line(capsys.readouterr().err)
    assert run(["score", str(csv_file), "--model-dir", str(tiny_model_dirs["keys"]), "--device", "cpu",
                "--max-length", "3"]) == 0


@pytest.mark.parametrize(("output", "words"), [("", "is a directory"), ("nodir/out.jsonl", "does not exist")])
def test_unwritable_output_is_refused_before_the_model_loads(output, words, csv_file, tmp_path, capsys) -> None:  # noqa: ANN001
    # No model directory at all: the --output error must come first, before any work.
    rc = run(["score", str(csv_file), "--model-dir", str(tmp_path / "no-model"), "--device", "cpu",
              "-o", str(tmp_path / output)])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert words in line and str(tmp_path) in line


def test_a_bogus_device_is_one_line(tiny_model_dirs, csv_file, capsys) -> None:  # noqa: ANN001
    rc = run(["score", str(csv_file), "--model-dir", str(tiny_model_dirs["keys"]), "--device", "bogus"])
    assert rc == 2
    assert "device 'bogus' is not one of cpu, cuda, cuda:N" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("flags", [["--scorer-model", "{m}", "--scorer-device", "bogus"],
                                   ["--response-model", "{m}", "--response-device", "bogus"],
                                   ["--shadow-candidate", "{m}", "--shadow-model", "m", "--scorer-device", "bogus"]])
def test_replay_with_a_bogus_device_is_one_line(flags, tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    from helpers import run_cli

    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"event_id": "a", "model": "m", "prediction": 1, "score": 0.7,
                                  "groups": {"sex": "F"}, "text": "my son is kind"}) + "\n")
    result = run_cli("replay", events, *(f.format(m=tiny_model_dirs["keys"]) for f in flags))
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert errors[0].startswith("fairwatch replay: error:") and "device 'bogus' is not one of cpu" in errors[0]
