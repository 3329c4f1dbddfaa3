"""``fairwatch finetune`` given malformed flags, template files and windows: one line, exit 2, no broken candidate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairwatch.alerts.finetune import (
    Example,
    FinetuneConfig,
    FinetuneInputError,
    read_templates,
    run_finetune,
)
from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon
from test_finetune import SKELETONS, TERMS, biased_events, run_cli, write_jsonl

FAST = ["--device", "cpu", "--max-steps", "1", "--batch-size", "16", "--no-progress"]


def one_error_line(err: str) -> str:
    # transformers' own "Loading weights" bar may precede it on stderr; the error is the one line that ends it.
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fairwatch finetune: error:"), err
    assert err.strip().splitlines()[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("flag,value", [
    ("--epochs", "nan"), ("--epochs", "-3"), ("--epochs", "0"), ("--batch-size", "0"), ("--max-rows", "-5"),
    ("--holdout", "1.5"), ("--holdout", "0"), ("--val-share", "1"), ("--lr", "nan"), ("--lr", "0"),
    ("--lr", "inf"), ("--max-steps", "0"), ("--max-seconds", "nan"), ("--gamma", "-1"), ("--delta", "nan"),
    ("--eval-every", "0"), ("--patience", "0"), ("--max-length", "0"), ("--max-accuracy-drop", "2"),
    ("--min-gap-reduction", "nan"), ("--seed", "-1"), ("--seed", str(2**32)), ("--batch-size", "1.5"),
])
def test_bad_number_flag_is_one_line_and_exit_2(flag: str, value: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    window = write_jsonl(tmp_path / "w.jsonl", biased_events())
    with pytest.raises(SystemExit) as exit_:
        run_cli([str(window), "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "out"), *FAST,
                 flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}:" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_library_config_out_of_range_is_refused_before_training(tmp_path: Path) -> None:
    # FinetuneConfig is public: a caller that skips the flag types gets the same refusal, not a nan model.
    examples = [Example(e["text"], e["label"], e["groups"]) for e in biased_events()]
    for field, value in (("lr", float("nan")), ("epochs", -3.0), ("batch_size", 0), ("holdout", 1.5),
                         ("max_rows", -5), ("patience", 2.5)):
        cfg = FinetuneConfig(model_dir=str(tmp_path / "m"), out=str(tmp_path / "out"), progress=False,
                             **{field: value})
        with pytest.raises(FinetuneInputError, match=f"^--{field.replace('_', '-')} must"):
            run_finetune(cfg, examples, "synthetic")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the non-finite guard


def test_non_finite_weights_are_one_line_nonzero_exit_and_nothing_written(
        tmp_path: Path, tiny_model_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A best checkpoint with an inf weight (here already the input's: no flag can make training diverge on
    purpose now that --lr must be finite) is refused: exit 1, one line, nothing under --out."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "poisoned"
    shutil.copytree(tiny_model_dirs["random"], model)
    weights = load_file(str(model / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("inf"))
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    window = write_jsonl(tmp_path / "w.jsonl", biased_events())
    rc = run_cli([str(window), "--model-dir", str(model), "--out", str(tmp_path / "out"), *FAST])
    assert rc == 1
    assert "not finite" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- --templates files


def _templates(path: Path, extra: bytes = b"") -> Path:
    rows = [f"{skel.replace('{}', '{identity}')},{'toxic' if toxic else 'nontoxic'},{skel.format(term)}"
            for skel, toxic in SKELETONS for term in TERMS]
    path.mkdir(parents=True, exist_ok=True)
    csv_path = path / "en_sentence_templates.csv"
    csv_path.write_bytes(("template,toxicity,phrase\n" + "\n".join(rows) + "\n").encode() + extra)
    return csv_path


def test_templates_skip_malformed_rows_and_keep_the_rest(tmp_path: Path) -> None:
    generator = CounterfactualGenerator(Lexicon.default().select(["sexuality"]))
    good = len(SKELETONS) * len(TERMS)
    _templates(tmp_path / "t", b"x,toxic\n" + b"t,maybe,my friend is gay\n" + b"t,toxic,   \n"
               + b"t,toxic,i hate gay people \xff\xfe\n")
    read = read_templates(tmp_path / "t", generator)
    # The short row, the unknown toxicity and the empty phrase are skipped; the undecodable bytes are
    # replaced, as the windows' CSV reader does, and that row kept.
    assert (len(read.examples), read.rejected) == (good + 1, 3)
    assert read.reasons == {"missing_field": 1, "unknown_label": 1, "no_text": 1}
    assert read.first_error.startswith(f"line {good + 2}:")
    assert read.examples[-1].label == 1 and read.examples[-1].groups == {"sexuality": "gay"}
    assert sum(e.label for e in read.examples) == sum(t for _, t in SKELETONS) * len(TERMS) + 1


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x80\x81\n\x00\x01\x02\n", b"template,label,text\na,1,b\n"])
def test_unreadable_templates_file_is_one_line_and_exit_2(content: bytes, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.csv").write_bytes(content)
    rc = run_cli(["--templates", str(tmp_path / "t.csv"), "--model-dir", str(tmp_path / "m"),
                  "--out", str(tmp_path / "out"), *FAST])
    assert rc == 2
    assert "no column" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- rejected rows on stderr


def test_rejected_rows_are_one_stderr_line(tmp_path: Path, tiny_model_dirs: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    events = biased_events()
    window = write_jsonl(tmp_path / "w.jsonl", events,
                         ("not json", json.dumps({"text": "", "label": 1, "groups": {}}), "{also not json"))
    rc = run_cli([str(window), "--model-dir", str(tiny_model_dirs["random"]), "--out", str(tmp_path / "o"), *FAST])
    assert rc == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert warnings == [f"fairwatch finetune: warning: {window}: skipped 3 malformed rows (invalid (bad_json): 2, "
                        f"invalid (no_text): 1); first: line {len(events) + 1}: not valid JSON"]
    data = json.loads((tmp_path / "o" / "report.json").read_text())["data"]
    assert data["rows"] == len(events) and data["rejected"] == 3
    assert data["rejected_reasons"] == {"bad_json": 2, "no_text": 1}
