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
        # bool is an int subclass: `true` was taken as 1
        ({"kind": "groups", "terms": ["x", "y"], "max_variants": True}, "max_variants must be a positive integer"),
        ({"pairs": [["he", "she"]], "max_variants": True}, "max_variants must be a positive integer"),
        # punctuation in a term was written into texts as it is ("A christian! church"), while matching ignored it
        ({"kind": "groups", "terms": ["christian!", "muslim"]},
         "'terms' entry 'christian!' must be words joined by single spaces, hyphens or apostrophes"),
        ({"kind": "groups", "forms": ["a", "b"], "terms": [["x", ["xs", "x.s"]], ["y", "ys"]]}, "'terms' entry 'x.s'"),
        ({"pairs": [["he.", "she"]]}, "'pairs' term 'he.'"),
        ({"pairs": [["he", "she"]], "unpaired": ["zoe?"]}, "'unpaired' term 'zoe?'"),
        ({"pairs": [["he", "she"]], "contextual": {"her": {"before_word": "his,", "otherwise": "him"}}},
         "contextual 'before_word' of 'her' 'his,'"),
        ({"kind": "groups", "terms": ["jews'", "muslims"]}, "'terms' entry \"jews'\""),
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
        # one extending group, not combined with the shipped lexicons: no variant, refused before the model loads
        {"attributes": {"g": {"kind": "groups", "extend": True, "terms": ["octogenarian"]}}},
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
    assert "attribute 'g'" in err[0] or "nested too deeply" in err[0]


def test_terms_may_join_words_by_spaces_hyphens_and_apostrophes() -> None:
    pairs = [["he", "she"], ["o'brien", "smith"], ["jean-luc", "anne marie"]]
    gen = CounterfactualGenerator(_lexicon({"pairs": pairs}))
    # an apostrophe joined the words of a term that could never match ("O'Brien left" was left as it was)
    assert gen.swap("O'Brien left", "g") == "Smith left"
    assert gen.swap("O\u2019Brien left", "g") == "Smith left"
    assert gen.swap("Smith said he left", "g") == "O'brien said she left"
    assert gen.swap("Jean-Luc left", "g") == "Anne marie left"


def _age(**spec) -> Lexicon:
    return Lexicon.from_mapping({"attributes": {"age": {"kind": "groups", "extend": True, **spec}}})


def test_extend_adds_groups_to_the_shipped_groups_attribute() -> None:
    shipped = Lexicon.default().attributes["age"]
    # "extend" was ignored: the one new group replaced the shipped ones (and alone was refused)
    assert "octogenarian" not in shipped.all_terms
    merged = Lexicon.default().extend(_age(terms=["octogenarian", "old"])).attributes["age"]
    assert merged.terms == (*shipped.terms, "octogenarian") and merged.kind == "groups" and not merged.extend
    gen = CounterfactualGenerator(Lexicon({"age": merged}))
    assert "An old man" in [v.text for v in gen.variants("An octogenarian man")["age"]]
    assert "An octogenarian man" in [v.text for v in gen.variants("An old man")["age"]]
    # one new group is enough to extend; its max_variants, where given, applies to the whole
    one = Lexicon.default().extend(_age(terms=["octogenarian"], max_variants=2)).attributes["age"]
    assert one.terms == merged.terms and one.max_variants == 2


def test_extend_merges_a_group_named_again_and_keeps_its_replacing_words() -> None:
    base = Lexicon.from_mapping({"attributes": {"r": {"kind": "groups", "forms": ["adjective", "people"],
                                                       "terms": [["christian", "christians"], ["jewish", "jews"]]}}})
    more = Lexicon.from_mapping({"attributes": {"r": {
        "kind": "groups", "extend": True, "forms": ["adjective", "people"],
        "terms": [["jewish", ["jews", "hebrews"]], ["sikh", "sikhs"]]}}})
    merged = base.extend(more).attributes["r"]
    assert merged.terms == ("christian", "jewish", "sikh")
    assert merged.form_alternatives[1] == (("jewish",), ("jews", "hebrews"))
    texts = [v.text for v in CounterfactualGenerator(base.extend(more)).variants("Hebrews and Sikhs")["r"]]
    assert texts == ["Christians and Christians", "Hebrews and Jews", "Sikhs and Sikhs"]
    assert [v.text for v in CounterfactualGenerator(base.extend(more)).variants("Christians")["r"]] == ["Jews", "Sikhs"]


@pytest.mark.parametrize(("attribute", "spec", "message"), [
    ("religion", {"kind": "groups", "terms": ["sikh"]},
     "attribute 'religion': 'extend' needs the forms of the attribute it extends, "
     "['adjective', 'person', 'people', 'faith', 'place of worship', 'scripture'], got ['term']"),
    ("gender", {"kind": "groups", "terms": ["x", "y"]},
     "attribute 'gender': 'extend' adds to an attribute of its own kind; this one is groups, the one before it pairs"),
    ("age", {"pairs": [["old", "young"]]},
     "attribute 'age': 'extend' adds to an attribute of its own kind; this one is pairs, the one before it groups"),
])
def test_extend_of_another_shape_is_one_lexicon_error(attribute: str, spec: dict, message: str) -> None:
    more = Lexicon.from_mapping({"attributes": {attribute: {**spec, "extend": True}}})
    with pytest.raises(LexiconError) as caught:
        Lexicon.default().extend(more)
    assert str(caught.value) == message


def test_one_extending_group_with_nothing_to_extend_is_refused_where_it_is_used() -> None:
    alone = _age(terms=["octogenarian"])
    assert Lexicon.from_mapping(alone.to_mapping()).attributes["age"].extend  # round-trips, still extending
    with pytest.raises(LexiconError, match="^attribute 'age' has one group, which gives no variant: .*--extend-default"):
        CounterfactualGenerator(alone)
    with pytest.raises(LexiconError, match="needs at least two terms"):
        Lexicon.from_mapping({"attributes": {"age": {"kind": "groups", "terms": ["octogenarian"]}}})
    # two groups stand alone: the attribute works as any other
    assert CounterfactualGenerator(_age(terms=["old", "young"])).variants("old")["age"][0].text == "young"


def test_a_decomposed_accent_is_composed_and_a_combining_script_is_refused_in_one_line() -> None:
    lexicon = Lexicon.from_mapping({"attributes": {"g": {"kind": "groups", "terms": ["cafe\u0301", "bar"]}}})
    assert CounterfactualGenerator(lexicon).variants("the café is open")["g"][0].text == "the bar is open"
    with pytest.raises(LexiconError) as caught:
        Lexicon.from_mapping({"attributes": {"g": {"kind": "groups", "terms": ["\u0939\u093f\u0902\u0926\u0942", "x"]}}})
    assert "\n" not in str(caught.value) and "combining marks" in str(caught.value)
