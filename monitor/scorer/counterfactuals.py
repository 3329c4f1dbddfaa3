"""Counterfactual text variants: swap group terms (he/she, one identity term for another).

A :class:`Lexicon` holds one entry per protected attribute. Two kinds exist:

* ``pairs``: a bijection of words (``son`` <-> ``daughter``); one variant per
  text swaps every term at once, so the variant of the variant is the text.
* ``groups``: interchangeable groups (``christian``, ``muslim``, ``jewish``...);
  one variant per other group of the attribute, every matched term replaced.
  A group may list several ``forms`` (adjective, person, people, ...), so
  "Jews" becomes "Muslims" and "a Jew" "a Muslim": a term is replaced by the
  same form of the other group, and a group without that form gives no
  variant rather than an ungrammatical one. A form may list several words
  (``[["tyrone", "jermaine"], ...]``): each matches, the first replaces.

A pairs attribute may also list ``unpaired`` terms (a gendered first name with
no partner): a text holding one gets no variant of that attribute, since
swapping the rest would change a person's pronouns but not their name. With
``"extend": true`` an attribute adds its pairs to the same-named attribute of
the lexicons before it, so first names, pronouns and gendered nouns swap
together, in one variant (``Lexicon.default()`` does this for ``gender``).
A groups attribute with ``"extend": true`` adds its groups the same way (it
must list the same ``forms``; a group already there gains the new words), so
one new group is enough: ``{"kind": "groups", "extend": true, "terms":
["octogenarian"]}`` adds to the shipped ``age`` groups.

Lexicon files are JSON (``.json``) or TOML (``.toml``), both read with the
standard library::

    {"name": "mine", "attributes": {
        "gender": {"kind": "pairs", "pairs": [["he", "she"]],
                   "contextual": {"her": {"before_word": "his", "otherwise": "him"}}},
        "religion": {"kind": "groups", "forms": ["adjective", "people"],
                     "terms": [["christian", "christians"], ["jewish", "jews"]],
                     "max_variants": 8}}}

A term is words (letters, digits) joined by single spaces, hyphens or
apostrophes ("o'brien"); other punctuation is refused, since the term is
written into texts as it is. Matching is on whole words only,
case-insensitive; the words of a multi-word term may be joined by spaces, a
hyphen or an apostrophe ("African American", "African-American"); the
replacement copies the case of the matched text (``Son`` -> ``Daughter``,
``SON`` -> ``DAUGHTER``).
Possessives work because ``'s`` is outside the word (``son's`` ->
``daughter's``, ``Jews'`` -> ``Muslims'``); plurals are listed as their own
pairs (``sons``/``daughters``, ``men``/``women``) or forms (``jews``) because
English plurals are irregular.

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
>>> cf.swap("Michael said his sister met Mary.", "gender")
'Mary said her brother met Michael.'
>>> [v.text for v in cf.variants("Jews and Muslims")["religion"]][:2]
['Christians and Christians', 'Muslims and Muslims']
"""
from __future__ import annotations

import functools
import json
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from fairwatch.monitor.errors import FairwatchError

__all__ = [
    "AttributeLexicon",
    "Lexicon",
    "LexiconError",
    "Swap",
    "Variant",
    "CounterfactualGenerator",
    "match_case",
]

DEFAULT_LEXICON_FILES = ("gender.json", "first_names.json", "identity_terms.json", "names_ethnicity.json")

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


class LexiconError(FairwatchError, ValueError):
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
    terms: tuple[str, ...] = ()  # groups: each group's first form, its name
    max_variants: int | None = None
    forms: tuple[str, ...] = ()  # groups: names of the forms ("adjective", "people", ...)
    group_forms: tuple[tuple[str | None, ...], ...] = ()  # groups: per group, its word for each form
    # groups: per group and form, every word that matches (the first is group_forms' word, which replaces them)
    form_alternatives: tuple[tuple[tuple[str, ...] | None, ...], ...] = ()
    unpaired: tuple[str, ...] = ()  # pairs: terms of the attribute with no counterpart
    extend: bool = False  # add to the same-named attribute of earlier lexicons

    @classmethod
    def from_mapping(cls, name: str, spec: Mapping[str, Any]) -> AttributeLexicon:
        if not isinstance(spec, Mapping):
            raise LexiconError(f"attribute {name!r}: expected a table, got {type(spec).__name__}")
        kind = spec.get("kind", "pairs" if "pairs" in spec else "groups")
        max_variants = spec.get("max_variants")
        # bool is an int subclass: `true` would have been taken as 1
        if max_variants is not None and (
            not isinstance(max_variants, int) or isinstance(max_variants, bool) or max_variants < 1
        ):
            raise LexiconError(f"attribute {name!r}: max_variants must be a positive integer")
        if kind == "pairs":
            raw_pairs = spec.get("pairs", [])
            if not isinstance(raw_pairs, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(w, str) and w.strip() for w in p)
                for p in raw_pairs
            ):
                raise LexiconError(f"attribute {name!r}: 'pairs' must be a list of [word, word] pairs")
            pairs = tuple((_term(name, a, "'pairs' term"), _term(name, b, "'pairs' term")) for a, b in raw_pairs)
            raw_contextual = spec.get("contextual", {})
            if not isinstance(raw_contextual, Mapping):
                raise LexiconError(
                    f"attribute {name!r}: 'contextual' must be a table of term -> "
                    f"{{before_word, otherwise}} tables, got {type(raw_contextual).__name__}"
                )
            contextual: dict[str, tuple[str, str]] = {}
            for term, rule in raw_contextual.items():
                if not isinstance(rule, Mapping) or not {"before_word", "otherwise"} <= set(rule):
                    raise LexiconError(
                        f"attribute {name!r}: contextual rule for {term!r} needs 'before_word' and 'otherwise'"
                    )
                key = _term(name, term, "'contextual' term")
                targets = tuple(_term(name, rule[k], f"contextual {k!r} of {term!r}") for k in ("before_word", "otherwise"))
                # pairs refuse a word swapped for itself: its "variant" would be the text unchanged, counted as one
                if key in targets:
                    raise LexiconError(f"attribute {name!r}: contextual rule for {term!r} swaps it for itself")
                if key in contextual:
                    raise LexiconError(f"attribute {name!r}: contextual term {term!r} appears twice")
                contextual[key] = targets
            raw_unpaired = spec.get("unpaired", [])
            if not isinstance(raw_unpaired, list) or not all(isinstance(t, str) and t.strip() for t in raw_unpaired):
                raise LexiconError(f"attribute {name!r}: 'unpaired' must be a list of strings")
            out = cls(name, "pairs", pairs=pairs, contextual=contextual, max_variants=max_variants,
                      unpaired=tuple(_term(name, t, "'unpaired' term") for t in raw_unpaired),
                      extend=bool(spec.get("extend", False)))
            if not pairs and not contextual:
                raise LexiconError(f"attribute {name!r}: no pairs")
            out._check_bijection()
            return out
        if kind == "groups":
            raw_terms = spec.get("terms", [])
            raw_forms = spec.get("forms", ["term"])
            if not isinstance(raw_forms, list) or not raw_forms or not all(isinstance(f, str) for f in raw_forms):
                raise LexiconError(f"attribute {name!r}: 'forms' must be a list of form names")
            n_forms = len(raw_forms)
            if not isinstance(raw_terms, list):
                raise LexiconError(f"attribute {name!r}: 'terms' must be a list")
            groups: dict[str, tuple[tuple[str, ...] | None, ...]] = {}
            for t in raw_terms:
                if isinstance(t, str) and t.strip():  # one word, every form
                    alternatives: tuple[tuple[str, ...] | None, ...] = ((_term(name, t, "'terms' entry"),),) * n_forms
                elif isinstance(t, list) and len(t) == n_forms and all(_is_form(w) for w in t) and t[0] is not None:
                    alternatives = tuple(
                        None if w is None
                        else tuple(dict.fromkeys(_term(name, x, "'terms' entry") for x in ([w] if isinstance(w, str) else w)))
                        for w in t
                    )
                else:
                    raise LexiconError(
                        f"attribute {name!r}: each term must be a string or a list of {n_forms} entries "
                        f"(one per form {raw_forms}: a word, a list of words whose first replaces the others, "
                        "or null where a group has none; the first given)"
                    )
                groups.setdefault(alternatives[0][0], alternatives)
            extend = bool(spec.get("extend", False))
            # an extending attribute may add a single group; CounterfactualGenerator refuses one left alone
            if len(groups) < (1 if extend else 2):
                raise LexiconError(f"attribute {name!r}: a groups attribute needs at least two terms")
            return cls._groups(name, tuple(raw_forms), tuple(groups.values()), max_variants, extend)
        raise LexiconError(f"attribute {name!r}: unknown kind {kind!r} (expected 'pairs' or 'groups')")

    @classmethod
    def _groups(cls, name: str, forms: tuple[str, ...], alternatives: tuple[tuple[tuple[str, ...] | None, ...], ...],
                max_variants: int | None, extend: bool = False) -> AttributeLexicon:
        """A groups attribute from each group's words per form (the first word of each form replaces the rest)."""
        return cls(name, "groups", terms=tuple(g[0][0] for g in alternatives), max_variants=max_variants, forms=forms,
                   group_forms=tuple(tuple(None if a is None else a[0] for a in g) for g in alternatives),
                   form_alternatives=alternatives, extend=extend)

    def _check_bijection(self) -> None:
        seen: set[str] = set(self.contextual)
        for w in [w for p in self.pairs for w in p] + list(self.unpaired):
            if w in seen:
                raise LexiconError(f"attribute {self.name!r}: term {w!r} appears twice; pairs must be a bijection")
            seen.add(w)

    def merged(self, other: AttributeLexicon) -> AttributeLexicon:
        """This attribute with ``other``'s added: pairs, contextual rules and unpaired terms, or groups.

        Groups are the union: a group of ``other`` named like one of this attribute's (its first word)
        gains ``other``'s words per form, after its own, so its replacing words stay; a new group is
        appended. ``other``'s ``max_variants``, where given, applies to the whole.
        """
        if self.kind != other.kind:
            raise LexiconError(
                f"attribute {self.name!r}: 'extend' adds to an attribute of its own kind; "
                f"this one is {other.kind}, the one before it {self.kind}"
            )
        if self.kind == "groups":
            if other.forms != self.forms:
                raise LexiconError(
                    f"attribute {self.name!r}: 'extend' needs the forms of the attribute it extends, "
                    f"{list(self.forms)}, got {list(other.forms)}"
                )
            groups = {g[0][0]: g for g in self.form_alternatives}
            for g in other.form_alternatives:
                old = groups.get(g[0][0])
                groups[g[0][0]] = g if old is None else tuple(
                    tuple(dict.fromkeys((a or ()) + (b or ()))) or None for a, b in zip(old, g)
                )
            return AttributeLexicon._groups(
                self.name, self.forms, tuple(groups.values()),
                other.max_variants if other.max_variants is not None else self.max_variants,
            )
        out = AttributeLexicon(
            self.name, "pairs", pairs=self.pairs + other.pairs, contextual={**self.contextual, **other.contextual},
            max_variants=self.max_variants, unpaired=self.unpaired + other.unpaired,
        )
        out._check_bijection()
        return out

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "pairs":
            out["pairs"] = [list(p) for p in self.pairs]
            if self.contextual:
                out["contextual"] = {t: {"before_word": b, "otherwise": o} for t, (b, o) in self.contextual.items()}
            if self.unpaired:
                out["unpaired"] = list(self.unpaired)
            if self.extend:
                out["extend"] = True
        else:
            if len(self.forms) > 1 or any(a is not None and len(a) > 1 for g in self.form_alternatives for a in g):
                out["forms"] = list(self.forms)
                out["terms"] = [[None if a is None else a[0] if len(a) == 1 else list(a) for a in g]
                                for g in self.form_alternatives]
            else:
                out["terms"] = list(self.terms)
            if self.extend:
                out["extend"] = True
        if self.max_variants is not None:
            out["max_variants"] = self.max_variants
        return out

    @property
    def all_terms(self) -> tuple[str, ...]:
        if self.kind == "groups":
            return tuple(dict.fromkeys(w for g in self.form_alternatives for a in g if a is not None for w in a))
        words = [w for p in self.pairs for w in p] + list(self.contextual) + list(self.unpaired)
        return tuple(dict.fromkeys(words))


def _is_form(entry: Any) -> bool:
    """A form of a group: null, a word, or a non-empty list of words."""
    if entry is None:
        return True
    if isinstance(entry, str):
        return bool(entry.strip())
    return isinstance(entry, list) and bool(entry) and all(isinstance(w, str) and w.strip() for w in entry)


def _norm(term: str) -> str:
    """Lower case, single spaces, composed accents (NFC: "cafe" + U+0301 is "café", as texts mostly write it)."""
    return " ".join(unicodedata.normalize("NFC", str(term)).lower().split())


def _term(attribute: str, value: Any, where: str) -> str:
    """``value`` normalised as a term of ``attribute``, or a LexiconError naming it and ``where`` it is.

    Terms are matched as runs of word characters, so one with none could never match (and broke the
    phrase table); anything but a string would be written into texts as its Python repr, and other
    punctuation ("christian!", "he.") as it is, while matching ignored it.
    """
    if not isinstance(value, str):
        raise LexiconError(f"attribute {attribute!r}: {where} must be a string, got {value!r}")
    if not _WORD.search(value):
        raise LexiconError(f"attribute {attribute!r}: {where} {value!r} has no letter or digit, so matches no word")
    term = _norm(value)
    if any(unicodedata.category(c).startswith("M") for c in term):
        # \w takes no combining mark: such a term was cut into pieces that never matched, or matched wrong
        raise LexiconError(f"attribute {attribute!r}: {where} {value!r} holds combining marks (as Devanagari or "
                           f"decomposed accents do), which matching does not support yet")
    if not _TERM.fullmatch(term):
        raise LexiconError(
            f"attribute {attribute!r}: {where} {value!r} must be words joined by single spaces, hyphens or apostrophes"
        )
    return term


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
        except RecursionError as exc:  # both parsers recurse per nesting level
            raise LexiconError(f"lexicon {path} is nested too deeply to read") from exc
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
        """A new lexicon with ``other``'s attributes added: replacing same-named ones, or merged into
        them where ``other``'s says ``"extend": true``."""
        attributes = dict(self.attributes)
        for name, attr in other.attributes.items():
            base = attributes.get(name)
            attributes[name] = base.merged(attr) if attr.extend and base is not None else attr
        return Lexicon(attributes, self.sources + other.sources)

    def select(self, names: Iterable[str]) -> Lexicon:
        names = list(names)
        missing = [n for n in names if n not in self.attributes]
        if missing:
            raise LexiconError(f"unknown attributes {missing}; known: {sorted(self.attributes)}")
        return Lexicon({n: self.attributes[n] for n in names}, self.sources)

    def checked(self) -> Lexicon:
        """This lexicon, once every attribute can give a variant: an ``"extend"`` groups attribute may list
        one group, which alone gives none (call where the lexicon is complete, before loading a model)."""
        for name, attr in self.attributes.items():
            if attr.kind == "groups" and len(attr.terms) < 2:
                raise LexiconError(f"attribute {name!r} has one group, which gives no variant: \"extend\": true "
                                   f"adds it to an earlier lexicon's {name!r} only where lexicons are combined "
                                   f"(fairwatch score --extend-default)")
        return self

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


_WORD = re.compile(r"\w+")
# What may join the words of a multi-word term in a text: "African American", "African-American", "O'Brien".
_GAP = re.compile(r"\s+|-|['\u2019]")
# A term as written in a lexicon (normalised: lower case, single spaces): words joined by what _GAP matches.
_TERM = re.compile(r"\w+(?:(?: |-|['\u2019])\w+)*")


def _words(text: str) -> list[tuple[int, int, str]]:
    """(start, end, lower-cased word) of every maximal run of word characters: whole words only."""
    return [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]


class _CompiledAttribute:
    """Lookup tables of one attribute, built once.

    A dictionary of word tuples rather than one regex alternation: the cost per
    text stays a few set lookups per word whatever the size of the lexicon
    (thousands of first names), where an alternation tries every term at every
    position.
    """

    def __init__(self, attr: AttributeLexicon) -> None:
        self.attr = attr
        self.phrases: dict[tuple[str, ...], str] = {}
        for t in attr.all_terms:
            self.phrases.setdefault(tuple(_WORD.findall(t)), t)
        self.first_words = frozenset(k[0] for k in self.phrases)
        self.longest = max(len(k) for k in self.phrases)
        self.mapping: dict[str, str] = {}
        for a, b in attr.pairs:
            self.mapping[a] = b
            self.mapping[b] = a
        self.unpaired = frozenset(attr.unpaired)
        # groups: surface word -> (group index, form index); the first group and form listed win
        self.slot: dict[str, tuple[int, int]] = {}
        for g, forms in enumerate(attr.form_alternatives):
            for f, alternatives in enumerate(forms):
                for w in alternatives or ():
                    self.slot.setdefault(w, (g, f))

    def find(self, text: str, words: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """Leftmost-longest, non-overlapping (start, end, canonical term) of the attribute's terms."""
        out = []
        i, n = 0, len(words)
        first_words, phrases = self.first_words, self.phrases
        while i < n:
            if words[i][2] in first_words:
                for k in range(min(self.longest, n - i), 0, -1):
                    term = phrases.get(tuple(w[2] for w in words[i : i + k]))
                    if term is not None and all(
                        _GAP.fullmatch(text, words[j][1], words[j + 1][0]) for j in range(i, i + k - 1)
                    ):
                        out.append((words[i][0], words[i + k - 1][1], term))
                        i += k
                        break
                else:
                    i += 1
            else:
                i += 1
        return out

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
        self.lexicon = lexicon.checked()
        self._compiled = {name: _CompiledAttribute(a) for name, a in lexicon.attributes.items()}

    def matches(self, text: str) -> dict[str, list[tuple[int, int, str]]]:
        """(start, end, canonical term) of every lexicon term in ``text``, per attribute that has one."""
        words = _words(text)
        out: dict[str, list[tuple[int, int, str]]] = {}
        for name, comp in self._compiled.items():
            found = comp.find(text, words)
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
        """The single counterfactual of ``text`` under a pairs attribute (the text itself if none)."""
        comp = self._compiled[attribute]
        if comp.attr.kind != "pairs":
            raise ValueError(f"attribute {attribute!r} is not a pairs attribute")
        found = comp.find(text, _words(text))
        variants = self._variants_for(attribute, text, found) if found else []
        return variants[0].text if variants else text

    def _variants_for(self, name: str, text: str, found: list[tuple[int, int, str]]) -> list[Variant]:
        comp = self._compiled[name]
        attr = comp.attr
        if attr.kind == "pairs":
            if comp.unpaired and any(term in comp.unpaired for _, _, term in found):
                return []  # a partial swap would mix genders (or whatever the attribute is)
            swaps = []
            for s, e, term in found:
                target = comp.target_for(term, text, e)
                swaps.append(Swap(s, e, term, target, match_case(text[s:e], target)))
            return [Variant(name, _apply(text, swaps), tuple(swaps))]
        slots = [comp.slot[term] for _, _, term in found]
        present = {g for g, _ in slots}
        variants = []
        for target, target_words in enumerate(attr.group_forms):
            if present == {target}:
                continue  # nothing would change
            swaps_list = []
            for (s, e, term), (g, f) in zip(found, slots):
                if g == target:
                    continue
                word = target_words[f]
                if word is None:
                    break  # the target group has no such form: no variant rather than a wrong word
                swaps_list.append(Swap(s, e, term, word, match_case(text[s:e], word)))
            else:
                variants.append(Variant(name, _apply(text, swaps_list), tuple(swaps_list)))
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
