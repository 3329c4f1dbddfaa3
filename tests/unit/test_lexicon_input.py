"""Malformed lexicons: one LexiconError naming what is wrong, never a traceback or a silently odd lexicon."""
from __future__ import annotations

import json

import pytest

from fairwatch.cli import build_parser, run_command
from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon, LexiconError

_HER = {"before_word": "his", "otherwise": "him"}


def _lexicon(spec: dict) -> Lexicon:
    return Lexicon.from_mapping({"attributes": {"g": spec}})


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        # a term with no word character could never match, and crashed building the phrase table
        ({"pairs": [["he", "she"], ["!!", "??"]]}, "'pairs' term '!!'"),
        ({"pairs": [["he", "she"]], "unpaired": ["--"]}, "'unpaired' term '--'"),
        ({"pairs": [["he", "she"]], "contextual": {"-": _HER}}, "'contextual' term '-'"),
        ({"pairs": [["he", "she"]], "contextual": {"": _HER}}, "'contextual' term ''"),
        ({"pairs": [["he", "she"]], "contextual": {"her": {"before_word": "his", "otherwise": "?"}}}, "'?'"),
        ({"kind": "groups", "terms": ["-", "+"]}, "'terms' entry '-'"),
        ({"kind": "groups", "forms": ["a", "b"], "terms": [["x", ["xs", "..."]], ["y", "ys"]]}, "'terms' entry '...'"),
        # 'contextual' must be a table of tables
        ({"pairs": [["he", "she"]], "contextual": "abc"}, "'contextual' must be a table"),
        ({"pairs": [["he", "she"]], "contextual": [1, 2]}, "'contextual' must be a table"),
        ({"pairs": [["he", "she"]], "contextual": 5}, "'contextual' must be a table"),
        ({"pairs": [["he", "she"]], "contextual": {"her": "his"}}, "rule for 'her' needs"),
        # targets were written into texts as str() of whatever was given
        ({"pairs": [["he", "she"]], "contextual": {"her": {"before_word": ["x"], "otherwise": "him"}}},
         "'before_word' of 'her' must be a string, got ['x']"),
        ({"pairs": [["he", "she"]], "contextual": {"her": {"before_word": "his", "otherwise": {"a": 1}}}},
         "'otherwise' of 'her' must be a string, got {'a': 1}"),
        ({"pairs": [["he", "she"]], "contextual": {"her": {"before_word": "his", "otherwise": "Her"}}},
         "rule for 'her' swaps it for itself"),
        ({"pairs": [["he", "she"]], "contextual": {"her": _HER, "HER": _HER}}, "'HER' appears twice"),
    ],
)
def test_a_bad_term_or_contextual_rule_is_one_error_naming_it(spec: dict, named: str) -> None:
    with pytest.raises(LexiconError) as caught:
        _lexicon(spec)
    message = str(caught.value)
    assert message.startswith("attribute 'g': ") and named in message and "\n" not in message


def test_a_good_contextual_rule_still_picks_by_the_next_word() -> None:
    gen = CounterfactualGenerator(_lexicon({"pairs": [["he", "she"]], "contextual": {"Her": _HER}}))
    assert gen.swap("He saw her book", "g") == "She saw his book"
    assert gen.swap("He saw her.", "g") == "She saw him."


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("deep_attrs.json", '{"attributes": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ],
)
def test_a_lexicon_nested_too_deeply_is_a_lexicon_error(tmp_path, name: str, content: str) -> None:  # noqa: ANN001
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LexiconError, match="nested too deeply"):
        Lexicon.from_file(path)


def test_a_toml_contextual_that_is_not_a_table_is_a_lexicon_error(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "lex.toml"
    path.write_text('[attributes.g]\npairs = [["he", "she"]]\ncontextual = 5\n')
    with pytest.raises(LexiconError, match="'contextual' must be a table of .* got int"):
        Lexicon.from_file(path)


@pytest.mark.parametrize(
    "lexicon",
    [
        {"attributes": {"g": {"pairs": [["he", "she"], ["!!", "??"]]}}},
        {"attributes": {"g": {"pairs": [["he", "she"]], "contextual": "abc"}}},
        {"attributes": {"g": {"pairs": [["he", "she"]],
                              "contextual": {"her": {"before_word": ["x"], "otherwise": {"a": 1}}}}}},
        "[" * 100_000 + "]" * 100_000,
    ],
)
@pytest.mark.parametrize("command", ["score", "replay"])
def test_the_commands_report_a_bad_lexicon_in_one_line_exit_2(tmp_path, capsys, command: str, lexicon) -> None:  # noqa: ANN001
    lex = tmp_path / "lex.json"
    lex.write_text(lexicon if isinstance(lexicon, str) else json.dumps(lexicon))
    texts = tmp_path / "in.jsonl"
    texts.write_text('{"text": "he left", "model": "m", "prediction": 1, "groups": {"g": "a"}, "event_id": "1"}\n')
    # the lexicon is read before the model, so no model is needed to reach its error
    model = ["--model-dir", str(tmp_path)] if command == "score" else ["--scorer-model", str(tmp_path)]
    rc = run_command(build_parser().parse_args([command, str(texts), *model, "--lexicon", str(lex)]))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"fairwatch {command}: error: ")
    assert "attribute 'g': " in err[0] or "nested too deeply" in err[0]
