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
        ("Othello and Sheila", "Othello and Sheila"),
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


def test_identity_lexicon_has_the_51_terms() -> None:
    lex = Lexicon.default()
    names = ["sexuality", "gender_identity", "ethnicity", "religion", "age", "disability"]
    assert sum(len(lex.attributes[n].terms) for n in names) == 51


# --- counterfactual of a counterfactual is the original -------------------------------------------------

_PAIR_ATTRS = ["gender", "first_name"]
_LEX = Lexicon.default()
_WORDS = sorted({w for a in _PAIR_ATTRS for w in _LEX.attributes[a].all_terms})
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
