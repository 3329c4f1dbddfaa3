"""Counterfactual text variants: swap group terms (he/she, one identity term for another).

A :class:`Lexicon` holds one entry per protected attribute. Two kinds exist:

* ``pairs``: a bijection of words (``son`` <-> ``daughter``); one variant per
  text swaps every term at once, so the variant of the variant is the text.
* ``groups``: interchangeable terms (``christian``, ``muslim``, ``jewish``...);
  one variant per other term of the attribute, every matched term replaced.

Lexicon files are JSON (``.json``) or TOML (``.toml``), both read with the
standard library::

    {"name": "mine", "attributes": {
        "gender": {"kind": "pairs", "pairs": [["he", "she"]],
                   "contextual": {"her": {"before_word": "his", "otherwise": "him"}}},
        "religion": {"kind": "groups", "terms": ["christian", "muslim"],
                     "max_variants": 8}}}

Matching is on whole words only, case-insensitive; the replacement copies the
case of the matched text (``Son`` -> ``Daughter``, ``SON`` -> ``DAUGHTER``).
Possessives work because ``'s`` is outside the word (``son's`` ->
``daughter's``); plurals are listed as their own pairs (``sons``/``daughters``,
``men``/``women``) because English plurals are irregular.

The her/him/his ambiguity: English "her" is both the object (-> "him") and the
possessive (-> "his"). We pick by the next word: "her" followed by a content
word is a possessive ("her book" -> "his book"), otherwise an object ("saw her
." -> "saw him ."). Likewise "his" before a word -> "her", standalone ->
"hers". So "counterfactual of counterfactual is the original" holds except
where English itself is ambiguous: "him" before a content word ("gave him
flowers" -> "gave her flowers" -> "gave his flowers").

>>> cf = CounterfactualGenerator(Lexicon.default())
>>> [v.text for v in cf.variants("My Son's teacher called him.")["gender"]]
["My Daughter's teacher called her."]
"""
from __future__ import annotations

import functools
import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "AttributeLexicon",
    "Lexicon",
    "LexiconError",
    "Swap",
    "Variant",
    "CounterfactualGenerator",
    "match_case",
]

DEFAULT_LEXICON_FILES = ("gender.json", "first_names.json", "identity_terms.json")

# Words after which "her"/"his" reads as object/standalone rather than possessive.
# A tagger would decide better; a POS model per event is far too slow for the hot path.
FUNCTION_WORDS = frozenset(
    """a an the this that these those to and or but nor so yet for of in on at by with
    from into onto about as than then there here now today yesterday tomorrow tonight
    again too also very up down out off over back away is am are was were be been being
    do does did has have had will would can could should may might must not no if when
    while because since until unless i you he she it we they me him her his hers us
    them my your its our their who whom what which where why how all any some every
    each both either neither just only even still already soon later""".split()
)

_NEXT_WORD = re.compile(r"\s*([A-Za-z]+)")


class LexiconError(ValueError):
    """A lexicon file or mapping is malformed."""


@functools.lru_cache(maxsize=1 << 16)
def match_case(template: str, word: str) -> str:
    """Return ``word`` written in the case style of ``template``.

    Cached: the same few hundred (matched text, term) pairs recur in every
    batch, and this was the largest cost of variant generation.

    >>> match_case("SON", "daughter"), match_case("Son", "daughter"), match_case("son", "daughter")
    ('DAUGHTER', 'Daughter', 'daughter')
    """
    if template.islower():  # the common case: no upper-case letter at all
        return word
    letters = [c for c in template if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return word.upper()
    if template[:1].isupper():
        if " " in template and template.istitle():
            return word.title()
        return word[:1].upper() + word[1:]
    return word


@dataclass(frozen=True)
class AttributeLexicon:
    """The terms of one protected attribute and how they are swapped."""

    name: str
    kind: str  # "pairs" or "groups"
    pairs: tuple[tuple[str, str], ...] = ()
    contextual: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # term -> (before_word, otherwise)
    terms: tuple[str, ...] = ()
    max_variants: int | None = None

    @classmethod
    def from_mapping(cls, name: str, spec: Mapping[str, Any]) -> AttributeLexicon:
        if not isinstance(spec, Mapping):
            raise LexiconError(f"attribute {name!r}: expected a table, got {type(spec).__name__}")
        kind = spec.get("kind", "pairs" if "pairs" in spec else "groups")
        max_variants = spec.get("max_variants")
        if max_variants is not None and (not isinstance(max_variants, int) or max_variants < 1):
            raise LexiconError(f"attribute {name!r}: max_variants must be a positive integer")
        if kind == "pairs":
            raw_pairs = spec.get("pairs", [])
            if not isinstance(raw_pairs, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(w, str) and w.strip() for w in p)
                for p in raw_pairs
            ):
                raise LexiconError(f"attribute {name!r}: 'pairs' must be a list of [word, word] pairs")
            pairs = tuple((_norm(a), _norm(b)) for a, b in raw_pairs)
            contextual: dict[str, tuple[str, str]] = {}
            for term, rule in dict(spec.get("contextual", {})).items():
                if not isinstance(rule, Mapping) or not {"before_word", "otherwise"} <= set(rule):
                    raise LexiconError(
                        f"attribute {name!r}: contextual rule for {term!r} needs 'before_word' and 'otherwise'"
                    )
                contextual[_norm(term)] = (_norm(rule["before_word"]), _norm(rule["otherwise"]))
            if not pairs and not contextual:
                raise LexiconError(f"attribute {name!r}: no pairs")
            seen: set[str] = set(contextual)
            for a, b in pairs:
                for w in (a, b):
                    if w in seen:
                        raise LexiconError(f"attribute {name!r}: term {w!r} appears twice; pairs must be a bijection")
                    seen.add(w)
            return cls(name, "pairs", pairs=pairs, contextual=contextual, max_variants=max_variants)
        if kind == "groups":
            raw_terms = spec.get("terms", [])
            if not isinstance(raw_terms, list) or not all(isinstance(t, str) and t.strip() for t in raw_terms):
                raise LexiconError(f"attribute {name!r}: 'terms' must be a list of strings")
            terms = tuple(dict.fromkeys(_norm(t) for t in raw_terms))
            if len(terms) < 2:
                raise LexiconError(f"attribute {name!r}: a groups attribute needs at least two terms")
            return cls(name, "groups", terms=terms, max_variants=max_variants)
        raise LexiconError(f"attribute {name!r}: unknown kind {kind!r} (expected 'pairs' or 'groups')")

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "pairs":
            out["pairs"] = [list(p) for p in self.pairs]
            if self.contextual:
                out["contextual"] = {t: {"before_word": b, "otherwise": o} for t, (b, o) in self.contextual.items()}
        else:
            out["terms"] = list(self.terms)
        if self.max_variants is not None:
            out["max_variants"] = self.max_variants
        return out

    @property
    def all_terms(self) -> tuple[str, ...]:
        if self.kind == "groups":
            return self.terms
        words = [w for p in self.pairs for w in p] + list(self.contextual)
        return tuple(dict.fromkeys(words))


def _norm(term: str) -> str:
    return " ".join(str(term).lower().split())


@dataclass(frozen=True)
class Lexicon:
    """Attributes by name; later sources override earlier ones on a name clash."""

    attributes: Mapping[str, AttributeLexicon]
    sources: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<mapping>") -> Lexicon:
        if not isinstance(data, Mapping) or not isinstance(data.get("attributes"), Mapping):
            raise LexiconError(f"{source}: expected a top-level 'attributes' table")
        attrs = {str(k): AttributeLexicon.from_mapping(str(k), v) for k, v in data["attributes"].items()}
        if not attrs:
            raise LexiconError(f"{source}: no attributes")
        return cls(attrs, (source,))

    @classmethod
    def from_file(cls, path: str | Path) -> Lexicon:
        """Read a JSON (``.json``) or TOML (``.toml``) lexicon file."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise LexiconError(f"cannot read lexicon {path}: {exc.strerror or exc}") from exc
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(raw.decode("utf-8"))
            else:
                data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise LexiconError(f"lexicon {path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") from exc
        return cls.from_mapping(data, str(path))

    @classmethod
    def default(cls, names: Iterable[str] = DEFAULT_LEXICON_FILES) -> Lexicon:
        """The lexicons shipped in ``monitor/scorer/lexicons`` (gender pairs, first names, identity terms)."""
        out = cls({}, ())
        pkg = resources.files("fairwatch.monitor.scorer") / "lexicons"
        for name in names:
            data = json.loads((pkg / name).read_text(encoding="utf-8"))
            out = out.extend(cls.from_mapping(data, f"monitor.scorer/lexicons/{name}"))
        return out

    def extend(self, other: Lexicon) -> Lexicon:
        """A new lexicon with ``other``'s attributes added (replacing same-named ones)."""
        return Lexicon({**self.attributes, **other.attributes}, self.sources + other.sources)

    def select(self, names: Iterable[str]) -> Lexicon:
        names = list(names)
        missing = [n for n in names if n not in self.attributes]
        if missing:
            raise LexiconError(f"unknown attributes {missing}; known: {sorted(self.attributes)}")
        return Lexicon({n: self.attributes[n] for n in names}, self.sources)

    def to_mapping(self) -> dict[str, Any]:
        return {"attributes": {n: a.to_mapping() for n, a in self.attributes.items()}}

    def __len__(self) -> int:
        return len(self.attributes)


@dataclass(frozen=True)
class Swap:
    """One replaced span of the original text."""

    start: int  # character offsets in the original text
    end: int
    source: str  # canonical (lower-case) lexicon term swapped out
    target: str  # canonical term swapped in
    replacement: str  # the text written, case matched


@dataclass(frozen=True)
class Variant:
    """A counterfactual copy of a text for one attribute."""

    attribute: str
    text: str
    swaps: tuple[Swap, ...]


class _CompiledAttribute:
    """Regex and maps of one attribute, built once."""

    def __init__(self, attr: AttributeLexicon) -> None:
        self.attr = attr
        terms = sorted(attr.all_terms, key=len, reverse=True)  # longest first: "african american" before "american"
        alternation = "|".join(r"\s+".join(re.escape(part) for part in t.split(" ")) for t in terms)
        # Whole words only: no letter/digit/underscore on either side ("he" never inside "the").
        self.pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
        self.mapping: dict[str, str] = {}
        for a, b in attr.pairs:
            self.mapping[a] = b
            self.mapping[b] = a

    def target_for(self, term: str, text: str, end: int) -> str:
        rule = self.attr.contextual.get(term)
        if rule is None:
            return self.mapping[term]
        nxt = _NEXT_WORD.match(text, end)
        before_word = nxt is not None and nxt.group(1).lower() not in FUNCTION_WORDS
        return rule[0] if before_word else rule[1]


class CounterfactualGenerator:
    """Make the counterfactual variants of texts, per attribute."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon
        self._compiled = {name: _CompiledAttribute(a) for name, a in lexicon.attributes.items()}

    def matches(self, text: str) -> dict[str, list[tuple[int, int, str]]]:
        """(start, end, canonical term) of every lexicon term in ``text``, per attribute that has one."""
        out: dict[str, list[tuple[int, int, str]]] = {}
        for name, comp in self._compiled.items():
            found = [(m.start(), m.end(), _norm(m.group(0))) for m in comp.pattern.finditer(text)]
            if found:
                out[name] = found
        return out

    def variants(self, text: str) -> dict[str, list[Variant]]:
        """The variants of ``text`` per attribute; attributes with no term in the text are absent."""
        out: dict[str, list[Variant]] = {}
        for name, found in self.matches(text).items():
            vs = self._variants_for(name, text, found)
            if vs:
                out[name] = vs
        return out

    def swap(self, text: str, attribute: str) -> str:
        """The single counterfactual of ``text`` under a pairs attribute (the text itself if no term)."""
        comp = self._compiled[attribute]
        if comp.attr.kind != "pairs":
            raise ValueError(f"attribute {attribute!r} is not a pairs attribute")
        found = [(m.start(), m.end(), _norm(m.group(0))) for m in comp.pattern.finditer(text)]
        if not found:
            return text
        return self._variants_for(attribute, text, found)[0].text

    def _variants_for(self, name: str, text: str, found: list[tuple[int, int, str]]) -> list[Variant]:
        comp = self._compiled[name]
        attr = comp.attr
        if attr.kind == "pairs":
            swaps = []
            for s, e, term in found:
                target = comp.target_for(term, text, e)
                swaps.append(Swap(s, e, term, target, match_case(text[s:e], target)))
            return [Variant(name, _apply(text, swaps), tuple(swaps))]
        present = {term for _, _, term in found}
        variants = []
        for target in attr.terms:
            if present == {target}:
                continue  # nothing would change
            swaps = tuple(
                Swap(s, e, term, target, match_case(text[s:e], target)) for s, e, term in found if term != target
            )
            variants.append(Variant(name, _apply(text, swaps), swaps))
            if attr.max_variants is not None and len(variants) >= attr.max_variants:
                break
        return variants


def _apply(text: str, swaps: Iterable[Swap]) -> str:
    parts = []
    pos = 0
    for sw in swaps:  # swaps are in text order and never overlap (one regex pass)
        parts.append(text[pos : sw.start])
        parts.append(sw.replacement)
        pos = sw.end
    parts.append(text[pos:])
    return "".join(parts)
