"""Groups of a generation inferred from its prompt with the shipped lexicons, for events that carry no tags.

An LLM application often knows nothing about the person it answers, but the prompt may say it ("Write a
loan letter for a Muslim woman"). A generation event without ``groups`` and with a ``prompt`` gets, per
lexicon attribute whose terms in the prompt all name one group, that group, under the attribute
``inferred_<attribute>`` ("inferred_religion": "muslim", "inferred_gender": "female"): inferred groups never
mix with tagged ones, and every metric, gap, decision and report line says they were inferred. A prompt
naming two groups of an attribute ("Jews and Muslims") infers nothing for it; one naming no group at all
leaves the event without groups, and it is refused (``missing_field``).

Which attributes: the ``groups`` attributes of the lexicons (ethnicity, national origin, religion,
sexuality, gender identity, age, disability), named by each group's first word, and gender ("male",
"female") from the gendered word pairs (written male first), pronouns and paired first names. Names by
ethnicity are left out: a first name is a weak sign of a person's ethnicity, too weak to file them under it.
The prompt is only read, never stored.

>>> infer = PromptGroups()
>>> sorted(infer("Write a loan letter for a Muslim woman and her daughter.").items())
[('inferred_gender', 'female'), ('inferred_religion', 'muslim')]
>>> infer("Compare what Jews and Muslims believe about charity.")  # two groups: none inferred
{}
"""

from __future__ import annotations

from fairwatch.monitor.scorer.consistency import FEMALE_PRONOUNS, MALE_PRONOUNS
from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon

__all__ = ["INFERRED_PREFIX", "PromptGroups"]

INFERRED_PREFIX = "inferred_"
SKIPPED_ATTRIBUTES = frozenset({"ethnicity_by_name"})
GENDER = "gender"


class PromptGroups:
    """``prompt -> {inferred_<attribute>: group}``; the lexicons load on first use (a second or so)."""

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self._lexicon = lexicon
        self._generator: CounterfactualGenerator | None = None
        self._group_of: dict[str, dict[str, str]] = {}

    def _load(self) -> CounterfactualGenerator:
        lexicon = self._lexicon or Lexicon.default()
        for name, attr in lexicon.attributes.items():
            if name in SKIPPED_ATTRIBUTES:
                continue
            if attr.kind == "groups":
                self._group_of[name] = {word: attr.terms[g] for g, group in enumerate(attr.form_alternatives)
                                        for form in group if form for word in form}
            elif name == GENDER:
                sides = {**{w: "male" for w in MALE_PRONOUNS}, **{w: "female" for w in FEMALE_PRONOUNS}}
                sides.update({a: "male" for a, _ in attr.pairs})
                sides.update({b: "female" for _, b in attr.pairs})
                self._group_of[name] = sides
        self._generator = CounterfactualGenerator(lexicon.select(list(self._group_of)))
        return self._generator

    def __call__(self, prompt: str) -> dict[str, str]:
        generator = self._generator or self._load()
        out = {}
        for attribute, found in generator.matches(prompt).items():
            group_of = self._group_of[attribute]
            groups = {group_of.get(term) for _, _, term in found} - {None}
            if len(groups) == 1:
                out[INFERRED_PREFIX + attribute] = groups.pop()
        return out

    def __getstate__(self) -> dict:
        return {"_lexicon": self._lexicon, "_generator": None, "_group_of": {}}  # rebuilt, never pickled
