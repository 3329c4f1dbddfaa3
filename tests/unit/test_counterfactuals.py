"""Counterfactual variants: whole words, case, possessives, plurals, lexicon files, involution."""
from __future__ import annotations

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fairwatch.monitor.scorer.counterfactuals import FUNCTION_WORDS, CounterfactualGenerator, Lexicon, LexiconError

GEN = CounterfactualGenerator(Lexicon.default())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My son is here.", "My daughter is here."),
        ("My Son is here.", "My Daughter is here."),
        ("MY SON IS HERE", "MY DAUGHTER IS HERE"),
        ("My son's teacher", "My daughter's teacher"),
        ("my sons' teachers", "my daughters' teachers"),
        ("Two men and a boy", "Two women and a girl"),
        ("the manager thanked them", "the manager thanked them"),  # no 'man' in 'manager', no 'he' in 'the'/'them'
        ("hello, he said", "hello, she said"),
        ("Othello on the shelf", "Othello on the shelf"),  # no "he" inside a word
        ("I saw him yesterday.", "I saw her yesterday."),
        ("I saw her yesterday.", "I saw him yesterday."),
        ("her own book is hers", "his own book is his"),
        ("his book is his.", "her book is hers."),
        ("ex-husband", "ex-wife"),
        ("Mr. Smith and his wife", "Mrs. Smith and her husband"),
    ],
)
def test_gender_variant_table(text: str, expected: str) -> None:
    got = GEN.swap(text, "gender")
    assert got == expected


def test_no_terms_means_no_variants() -> None:
    assert GEN.variants("The manager of the theme park thanked them.") == {}


def test_group_variants_cover_every_other_term() -> None:
    v = GEN.variants("A Muslim neighbour")["religion"]
    religion = Lexicon.default().attributes["religion"].terms
    assert [x.text for x in v] == [f"A {t.capitalize()} neighbour" for t in religion if t != "muslim"]
    assert all(x.swaps[0].source == "muslim" for x in v)


def test_multiword_terms_match_longest_first() -> None:
    texts = [x.text for x in GEN.variants("African American voters")["ethnicity"]]
    assert "Asian voters" in texts and "African Asian voters" not in texts


def test_max_variants_caps_group_variants() -> None:
    lex = Lexicon.from_mapping({"attributes": {"r": {"kind": "groups", "terms": ["a1", "b1", "c1"], "max_variants": 1}}})
    assert len(CounterfactualGenerator(lex).variants("x a1 y")["r"]) == 1


def test_lexicon_files_json_and_toml(tmp_path) -> None:  # noqa: ANN001
    j = tmp_path / "l.json"
    j.write_text(json.dumps({"attributes": {"pet": {"kind": "pairs", "pairs": [["cat", "dog"]]}}}))
    t = tmp_path / "l.toml"
    t.write_text('[attributes.colour]\nkind = "groups"\nterms = ["red", "blue"]\n')
    lex = Lexicon.default().extend(Lexicon.from_file(j)).extend(Lexicon.from_file(t))
    gen = CounterfactualGenerator(lex)
    assert gen.swap("My Cat", "pet") == "My Dog"
    assert [v.text for v in gen.variants("a red car")["colour"]] == ["a blue car"]
    assert "gender" in lex.attributes


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"nope": 1}),
        json.dumps({"attributes": {"x": {"kind": "pairs", "pairs": [["a"]]}}}),
        json.dumps({"attributes": {"x": {"kind": "pairs", "pairs": [["a", "b"], ["a", "c"]]}}}),
        json.dumps({"attributes": {"x": {"kind": "groups", "terms": ["only"]}}}),
        json.dumps({"attributes": {"x": {"kind": "weird"}}}),
    ],
)
def test_bad_lexicon_files_raise_lexicon_error(tmp_path, content: str) -> None:  # noqa: ANN001
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(LexiconError):
        Lexicon.from_file(p)


def test_identity_lexicon_keeps_the_jigsaw_terms_first() -> None:
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "jigsaw-bias" / "identity_terms.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    lex = Lexicon.default()
    for category in {r["category"] for r in rows}:
        attribute = "gender_identity" if category == "gender" else category
        jigsaw = [r["term"] for r in rows if r["category"] == category]
        assert list(lex.attributes[attribute].terms[: len(jigsaw)]) == jigsaw


# --- counterfactual of a counterfactual is the original -------------------------------------------------

_PAIR_ATTRS = ["gender"]
_LEX = Lexicon.default()
# pronouns, nouns and a sample of the (thousands of) first names, unpaired ones included
_ALL = sorted({w for a in _PAIR_ATTRS for w in _LEX.attributes[a].all_terms})
_WORDS = [w for i, w in enumerate(_ALL) if i % 20 == 0 or w in {x for p in _LEX.attributes["gender"].pairs[:80] for x in p}]
_FILLER = ["the", "a", "book", "manager", "said", "to", "yesterday", "theme", "kind", "and", "hello"]
_PUNCT = [" ", " ", " ", ", ", ". ", "'s ", "! "]


def _cases(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.upper(), word.capitalize()])


@st.composite
def sentences(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.one_of(st.sampled_from(_WORDS).flatmap(_cases), st.sampled_from(_FILLER)), min_size=1, max_size=12))
    seps = draw(st.lists(st.sampled_from(_PUNCT), min_size=len(words), max_size=len(words)))
    return "".join(w + s for w, s in zip(words, seps)).strip()


def _ambiguous(text: str) -> bool:
    """'him'/'hers' before a content word: English 'her' reads both ways there (documented)."""
    import re

    toks = re.findall(r"[A-Za-z]+|[^\sA-Za-z]", text)
    for a, b in zip(toks, toks[1:]):
        if a.lower() in ("him", "hers") and b.isalpha() and b.lower() not in FUNCTION_WORDS:
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(sentences(), st.sampled_from(_PAIR_ATTRS))
def test_counterfactual_of_counterfactual_is_original(text: str, attribute: str) -> None:
    assume(not _ambiguous(text))
    once = GEN.swap(text, attribute)
    assert GEN.swap(once, attribute) == text


# --- forms of identity terms, joint gender swaps, case -------------------------------------------------


def _texts(text: str, attribute: str) -> list[str]:
    return [v.text for v in GEN.variants(text).get(attribute, [])]


@pytest.mark.parametrize(
    ("text", "attribute", "expected"),
    [
        ("Muslims are bad and Jews too", "religion", "Christians are bad and Christians too"),
        ("A Jew and a Muslim", "religion", "A Christian and a Christian"),
        ("The Jewish faith", "religion", "The Christian faith"),
        ("He studied Judaism at the synagogue", "religion", "He studied Christianity at the church"),
        ("Blacks and Asians", "ethnicity", "Africans and Africans"),
        ("African-American voters", "ethnicity", "African voters"),
    ],
)
def test_plural_and_noun_forms_swap_to_the_same_form(text: str, attribute: str, expected: str) -> None:
    assert _texts(text, attribute)[0] == expected


def test_possessive_forms_keep_their_apostrophe() -> None:
    assert "The Christians' money" in _texts("The Jews' money", "religion")
    assert "The Christian's money" in _texts("The Jew's money", "religion")
    assert GEN.swap("Mary's son", "gender") == "Michael's daughter"  # name and noun in one variant


def test_group_without_the_form_gives_no_variant_rather_than_a_wrong_word() -> None:
    religion = _LEX.attributes["religion"]
    people, place = religion.forms.index("people"), religion.forms.index("place of worship")
    with_place = {g[people] for g in religion.group_forms if g[place] is not None and g[people] != "muslims"}
    texts = _texts("Muslims meet at the mosque", "religion")
    assert {t.split()[0].lower() for t in texts} == with_place
    assert len(texts) < len(religion.group_forms) - 1  # atheists, agnostics... have no place of worship


def test_a_joint_swap_changes_name_pronouns_and_nouns_together() -> None:
    names = _LEX.attributes["gender"].pairs
    male, female = next((a, b) for a, b in names if a == "edward" or b == "melissa")
    text = f"{female.capitalize()} spent her days with her brother; she liked him."
    variants = GEN.variants(text)
    assert set(variants) >= {"gender"} and "first_name" not in variants  # one variant, not one per kind
    (only,) = variants["gender"]
    assert only.text == f"{male.capitalize()} spent his days with his sister; he liked her."


def test_a_text_with_an_unpaired_gendered_name_gets_no_gender_variant() -> None:
    unpaired = _LEX.attributes["gender"].unpaired
    assert unpaired, "the shipped lexicon lists its unpaired names"
    text = f"{unpaired[0].capitalize()} said she was tired."
    assert "gender" not in GEN.variants(text)
    assert GEN.swap(text, "gender") == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("JEWS", "CHRISTIANS"), ("Jews", "Christians"), ("jews", "christians"), ("African-American", "African")],
)
def test_case_of_the_matched_text_is_kept(text: str, expected: str) -> None:
    assert _texts(text, "religion" if "ew" in text.lower() else "ethnicity")[0] == expected


def test_extend_merges_pairs_and_rejects_a_clash() -> None:
    base = Lexicon.from_mapping({"attributes": {"g": {"pairs": [["he", "she"]]}}})
    more = Lexicon.from_mapping({"attributes": {"g": {"pairs": [["tom", "ann"]], "extend": True, "unpaired": ["zoe"]}}})
    merged = base.extend(more).attributes["g"]
    assert merged.pairs == (("he", "she"), ("tom", "ann")) and merged.unpaired == ("zoe",)
    assert CounterfactualGenerator(base.extend(more)).swap("Tom said he left", "g") == "Ann said she left"
    clash = Lexicon.from_mapping({"attributes": {"g": {"pairs": [["she", "x"]], "extend": True}}})
    with pytest.raises(LexiconError):
        base.extend(clash)
    # without "extend" the later attribute replaces the earlier one, as before
    plain = Lexicon.from_mapping({"attributes": {"g": {"pairs": [["tom", "ann"]]}}})
    assert base.extend(plain).attributes["g"].pairs == (("tom", "ann"),)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "groups", "forms": ["a", "b"], "terms": [["x", "xs"], ["y"]]},  # wrong length
        {"kind": "groups", "forms": ["a", "b"], "terms": [[None, "xs"], ["y", "ys"]]},  # first form missing
        {"kind": "groups", "forms": "a", "terms": ["x", "y"]},
        {"kind": "pairs", "pairs": [["a", "b"]], "unpaired": ["a"]},  # unpaired clashes with a pair
    ],
)
def test_bad_forms_and_unpaired_raise_lexicon_error(spec: dict) -> None:
    with pytest.raises(LexiconError):
        Lexicon.from_mapping({"attributes": {"x": spec}})


def test_lexicon_round_trips_through_its_mapping() -> None:
    again = Lexicon.from_mapping(_LEX.to_mapping())
    assert {n: a.to_mapping() for n, a in again.attributes.items()} == {n: a.to_mapping() for n, a in _LEX.attributes.items()}


def test_no_shipped_gender_variant_mixes_genders() -> None:
    from fairwatch.monitor.scorer.consistency import mixed_gender_variants

    texts = [f"{a.capitalize()} told his {b} and her sister that he left." for a, b in _LEX.attributes["gender"].pairs[:300]]
    assert mixed_gender_variants(GEN, texts) == []
    # the checker does catch a lexicon that swaps names and pronouns in separate variants
    split = Lexicon.from_mapping({"attributes": {
        "gender": {"pairs": [["he", "she"]], "contextual": {"his": {"before_word": "her", "otherwise": "hers"}}},
        "first_name": {"pairs": [["tom", "ann"]]},
    }})
    assert len(mixed_gender_variants(CounterfactualGenerator(split), ["Tom said he left"])) == 2


def test_a_name_by_ethnicity_swaps_to_a_name_of_the_same_sex_of_each_other_group() -> None:
    attr = _LEX.attributes["ethnicity_by_name"]
    male, female = attr.forms.index("male"), attr.forms.index("female")
    alternatives = attr.form_alternatives
    second_male = alternatives[1][male][1]  # not the group's first name: it matches too, the first replaces it
    texts = _texts(f"{second_male.capitalize()} said he was tired.", "ethnicity_by_name")
    expected = {f"{g[male].capitalize()} said he was tired." for i, g in enumerate(attr.group_forms) if i != 1}
    assert set(texts) == expected
    first_female = attr.group_forms[0][female]
    assert all(f"{g[female].capitalize()} left" in _texts(f"{first_female.capitalize()} left", "ethnicity_by_name")
               for g in attr.group_forms[1:])
    # a list of words per form round-trips through the mapping
    lex = Lexicon.from_mapping({"attributes": {"n": {"forms": ["male"], "terms": [[["ab", "ac"]], ["zed"]]}}})
    assert CounterfactualGenerator(lex).variants("Ac left")["n"][0].text == "Zed left"
    assert Lexicon.from_mapping(lex.to_mapping()).attributes["n"].form_alternatives == ((("ab", "ac"),), (("zed",),))
