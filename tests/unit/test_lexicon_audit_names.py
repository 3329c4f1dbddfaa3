"""The audit-study names of names_ethnicity.json (benchmarks/build_name_lexicon.py, AUDIT_NAMES): Black-coded
names of Bertrand and Mullainathan (2004) and Greenwald et al. (1998) swap to names of the same sex of the other
groups; a country among them (Kenya) and names already in a group are left where they were."""

from __future__ import annotations

from benchmarks.build_name_lexicon import AUDIT_NAMES, AUDIT_PLACES

from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon

_LEX = Lexicon.default()
_ATTR = _LEX.attributes["ethnicity_by_name"]
BLACK = list(_ATTR.terms).index(_ATTR.group_forms[1][0])
MALE, FEMALE = _ATTR.forms.index("male"), _ATTR.forms.index("female")


def test_audit_names_are_in_the_black_group_under_their_sex():
    assert {"jamal", "jerome", "malik", "lamar"} <= set(_ATTR.form_alternatives[BLACK][MALE])
    assert {"shaniqua", "lakisha", "tanisha"} <= set(_ATTR.form_alternatives[BLACK][FEMALE])
    every = {name for group in _ATTR.form_alternatives for form in group if form for name in form}
    assert not AUDIT_PLACES & every
    # each kept audit name sits in exactly one group and form (the lexicon stays a bijection of names)
    for name in AUDIT_NAMES["black"]:
        homes = [(g, f) for g, group in enumerate(_ATTR.form_alternatives) for f, form in enumerate(group)
                 if form and name in form]
        assert len(homes) <= 1, (name, homes)


def test_a_black_coded_name_swaps_to_each_other_group_keeping_pronouns_and_sex():
    variants = CounterfactualGenerator(_LEX).variants("Jamal said he was tired, and Shaniqua's sister agreed.")
    texts = {v.text for v in variants["ethnicity_by_name"]}
    expected = {f"{g[MALE].capitalize()} said he was tired, and {g[FEMALE].capitalize()}'s sister agreed."
                for i, g in enumerate(_ATTR.group_forms) if i != BLACK}
    assert texts == expected and len(texts) == len(_ATTR.group_forms) - 1


def test_kenya_the_country_is_not_swapped_as_a_name():
    variants = CounterfactualGenerator(_LEX).variants("We flew to Kenya last spring.")
    assert not variants.get("ethnicity_by_name")
