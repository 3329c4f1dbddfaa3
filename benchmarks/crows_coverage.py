"""Coverage of the counterfactual lexicons on CrowS-Pairs, before and after, measured with ``fairwatch score``.

    python -m benchmarks.crows_coverage [--data ../shared/data] [--before-rev 815fe7a]

Runs ``fairwatch score --format jsonl`` on the ``sent_more`` column of
CrowS-Pairs twice in the same run: with the lexicons of ``--before-rev`` (read
from git) and with the shipped ones. A row counts as covered when a variant of
the attribute matching its ``bias_type`` was produced (its
``variants_by_attribute``). Prints the table and the count of gender variants
that mix genders (``monitor.scorer.consistency``). Coverage does not depend on
the model, so a tiny random BERT built here does the scoring.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bias_type -> attributes whose variants count for it
MATCHING = {
    "gender": ("gender", "first_name"),
    "race-color": ("ethnicity", "national_origin", "ethnicity_by_name"),
    "religion": ("religion",),
}
GOALS = {"gender": 0.95, "race-color": 0.85, "religion": 0.85}
OLD_FILES = ("gender.json", "first_names.json", "identity_terms.json")


def old_lexicon(rev: str, out: Path) -> Path:
    """The lexicons of git revision ``rev``, merged into one file as ``Lexicon.default()`` merged them then."""
    attributes: dict = {}
    for name in OLD_FILES:
        text = subprocess.run(["git", "show", f"{rev}:monitor/scorer/lexicons/{name}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        attributes.update(json.loads(text)["attributes"])
    out.write_text(json.dumps({"attributes": attributes}), encoding="utf-8")
    return out


def score_rows(csv_path: Path, model_dir: Path, lexicon: Path | None, out: Path) -> list[dict]:
    argv = [sys.executable, "-m", "fairwatch", "score", str(csv_path), "--text-col", "sent_more", "--model-dir",
            str(model_dir), "--device", "cpu", "-o", str(out), "--format", "jsonl"]
    if lexicon is not None:
        argv += ["--lexicon", str(lexicon)]
    subprocess.run(argv, cwd=ROOT, check=True)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def coverage(rows: list[dict], bias_type: dict[int, str]) -> dict[str, tuple[int, int]]:
    by_row = {r["row"]: r.get("variants_by_attribute") for r in rows}
    out: dict[str, tuple[int, int]] = {}
    for kind, attrs in MATCHING.items():
        wanted = [i for i, b in bias_type.items() if b == kind]
        hit = 0
        for i in wanted:
            counts = by_row.get(i)
            if counts is None:
                raise SystemExit("fairwatch score wrote no variants_by_attribute: too old a checkout?")
            hit += any(counts.get(a, 0) for a in attrs)
        out[kind] = (hit, len(wanted))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding crows-pairs/")
    p.add_argument("--before-rev", default="815fe7a", help="git revision of the 'before' lexicons")
    args = p.parse_args(argv)
    csv_path = Path(args.data) / "crows-pairs" / "crows_pairs_anonymized.csv"
    if not csv_path.is_file():
        print(f"{csv_path} not found", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from fairwatch.monitor.scorer.consistency import mixed_gender_variants
    from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon
    from tests.scorer_fixtures import build_tiny_model

    with csv_path.open(newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    bias_type = {i: r["bias_type"] for i, r in enumerate(records, start=1)}
    texts = [r["sent_more"] for r in records]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = build_tiny_model(tmp / "model", "random")
        before_lex = old_lexicon(args.before_rev, tmp / "before.json")
        before = coverage(score_rows(csv_path, model, before_lex, tmp / "before.jsonl"), bias_type)
        after = coverage(score_rows(csv_path, model, None, tmp / "after.jsonl"), bias_type)
        mixed_before = mixed_gender_variants(CounterfactualGenerator(Lexicon.from_file(before_lex)), texts)
        mixed_after = mixed_gender_variants(CounterfactualGenerator(Lexicon.default()), texts)
    print(f"CrowS-Pairs sent_more, {len(records)} rows; covered = a variant of the matching attribute")
    print(f"{'bias_type':<11} {'rows':>5} {'before':>14} {'after':>14} {'goal':>5}  attributes")
    for kind in MATCHING:
        (hb, n), (ha, _) = before[kind], after[kind]
        print(f"{kind:<11} {n:>5} {hb:>5} ({hb / n:.3f}) {ha:>5} ({ha / n:.3f}) {GOALS[kind]:>5.2f}  "
              f"{', '.join(MATCHING[kind])}")
    print(f"gender variants mixing genders (all rows): before {len(mixed_before)}, after {len(mixed_after)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
