"""Check that gender variants swap a whole text, never half of it ("Melissa spent his days").

The check is independent of how variants are built: it counts the male- and
female-coded words of the text and of each variant, with its own word scan, and
a consistent variant has exactly the text's counts exchanged. A variant that
swapped the pronouns but not a name (or the other way round) keeps some word
of one side and fails. The coded words are the two sides of the attribute's
pairs (written male first in the shipped lexicons), its contextual pronouns
and, as blockers, its unpaired names.

>>> from monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon
>>> gen = CounterfactualGenerator(Lexicon.default())
>>> mixed_gender_variants(gen, ["James said his sister left.", "Mary left."])
[]
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator

__all__ = ["GenderCounts", "gender_counts", "mixed_gender_variants"]

_WORD = re.compile(r"[^\W\d_]+")
MALE_PRONOUNS = frozenset({"he", "him", "his", "himself"})
FEMALE_PRONOUNS = frozenset({"she", "her", "hers", "herself"})


@dataclass(frozen=True)
class GenderCounts:
    male: int
    female: int


def _sides(generator: CounterfactualGenerator, attributes: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    male, female = set(MALE_PRONOUNS), set(FEMALE_PRONOUNS)
    for name in attributes:
        attr = generator.lexicon.attributes[name]
        male.update(a for a, _ in attr.pairs if " " not in a)
        female.update(b for _, b in attr.pairs if " " not in b)
    return frozenset(male), frozenset(female)


def gender_counts(text: str, male: frozenset[str], female: frozenset[str]) -> GenderCounts:
    words = [w.lower() for w in _WORD.findall(text)]
    return GenderCounts(sum(w in male for w in words), sum(w in female for w in words))


def mixed_gender_variants(
    generator: CounterfactualGenerator, texts: Iterable[str], attributes: Iterable[str] = ("gender", "first_name")
) -> list[tuple[str, str]]:
    """(text, variant) for every variant of ``attributes`` that does not exchange the text's gender words.

    The words of all ``attributes`` present in the lexicon count together, so
    a names-only variant beside a pronouns-only one (two attributes) fails.
    """
    present = [a for a in attributes if a in generator.lexicon.attributes]
    male, female = _sides(generator, present)
    out = []
    for text in texts:
        by_attribute = generator.variants(text)
        variants = [v for a in present for v in by_attribute.get(a, [])]
        if not variants:
            continue
        before = gender_counts(text, male, female)
        for v in variants:
            after = gender_counts(v.text, male, female)
            if (after.male, after.female) != (before.female, before.male):
                out.append((text, v.text))
    return out
