"""The counterfactual scorer on tiny real HF models (CPU)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fairwatch.monitor.scorer.counterfactuals import Lexicon  # noqa: E402
from fairwatch.monitor.scorer.model import ModelLoadError, load_classifier, positive_scores  # noqa: E402
from fairwatch.monitor.scorer.pairs import paired_score_changes  # noqa: E402
from fairwatch.monitor.scorer.scoring import CounterfactualScorer  # noqa: E402
from fairwatch.monitor.scorer.stats import CounterfactualStats  # noqa: E402

TEXTS = [
    "my son went home .",
    "She is kind",
    "Her book is good",
    "hello there",
    "the muslim teacher said hello",
    "John met Mary at the park yesterday",
    "His daughter's friend is a gay doctor",
    "the manager of the theme park",
    "they love the black dog and the white car",
    "an old nurse and a young doctor",
]
GENDERED = ["my son went home .", "she is kind", "her book is good", "the man saw his friend", "my mother wrote a book",
            "he is a smart doctor", "the girls are nice", "my husband's car"]


@pytest.fixture(scope="module")
def random_scorer(tiny_model_dirs):  # noqa: ANN001, ANN201
    return CounterfactualScorer(tiny_model_dirs["random"], Lexicon.default(), device="cpu", max_batch=7)


def test_loader_uses_fp32_on_cpu_and_reads_num_labels(tiny_model_dirs) -> None:  # noqa: ANN001
    import torch

    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu" and loaded.num_labels == 2


def test_positive_scores_softmax_and_sigmoid() -> None:
    import torch

    two = positive_scores(torch.tensor([[0.0, 0.0], [0.0, 2.0]]))
    one = positive_scores(torch.tensor([[0.0], [2.0]]))
    assert torch.allclose(two, torch.tensor([0.5, 1 / (1 + np.exp(-2.0))], dtype=torch.float32))
    assert torch.allclose(one, two)


def test_missing_model_dir_raises(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ModelLoadError):
        load_classifier(tmp_path / "nope", device="cpu")


def test_batched_scores_equal_one_at_a_time(random_scorer) -> None:  # noqa: ANN001
    together = random_scorer.score(TEXTS)
    for i, t in enumerate(TEXTS):
        alone = random_scorer.score([t])
        assert alone.original_score[0] == pytest.approx(together.original_score[i], abs=1e-5)
        assert alone.debiased_score[0] == pytest.approx(together.debiased_score[i], abs=1e-5)
        assert alone.max_abs_change[0] == pytest.approx(together.max_abs_change[i], abs=1e-5)
        assert alone.n_variants[0] == together.n_variants[i]
    assert together.n_variants.sum() > 0 and np.ptp(together.original_score) > 0.01


def test_variants_scored_like_their_texts(random_scorer) -> None:  # noqa: ANN001
    """Spliced token ids give the same scores as scoring the variant texts directly."""
    res = random_scorer.score(TEXTS)
    variants = [v for t in TEXTS for vs in random_scorer.generator.variants(t).values() for v in vs]
    direct = random_scorer.score_texts([v.text for v in variants])
    got = np.concatenate([res.attributes[a].variant_score for a in res.attributes])
    want_by_attr = {}
    k = 0
    for t in TEXTS:
        for a, vs in random_scorer.generator.variants(t).items():
            want_by_attr.setdefault(a, []).extend(direct[k : k + len(vs)])
            k += len(vs)
    want = np.concatenate([np.asarray(want_by_attr[a]) for a in res.attributes])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_splice_off_gives_same_result(tiny_model_dirs, random_scorer) -> None:  # noqa: ANN001
    plain = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", splice=False)
    a, b = random_scorer.score(TEXTS), plain.score(TEXTS)
    np.testing.assert_allclose(a.debiased_score, b.debiased_score, atol=1e-5)
    assert plain.spliced == 0 and plain.retokenized > 0


def test_splice_handles_plural_possessive_hyphenated_and_multiword_swaps(tiny_model_dirs, random_scorer) -> None:  # noqa: ANN001
    # "African-American" (3 tokens) -> "Asian" (1) and "Muslims" -> "book of mormon"-free forms shift token
    # positions: splicing must give the ids a fresh tokenization of the variant gives.
    texts = ["Muslims and Jews' friends", "the African-American voters", "Michael's sister met Mary",
             "a Sikh read the Guru Granth Sahib", "Blacks, Whites and Native Americans"]
    plain = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", splice=False)
    before = random_scorer.spliced
    a, b = random_scorer.score(texts), plain.score(texts)
    assert random_scorer.spliced > before and a.n_variants.sum() == b.n_variants.sum() > 20
    for name, detail in a.attributes.items():
        np.testing.assert_allclose(detail.variant_score, b.attributes[name].variant_score, atol=1e-5)


def test_bad_rows_are_rejected_not_fatal(random_scorer) -> None:  # noqa: ANN001
    res = random_scorer.score(["my son", None, "", "   ", 3.5, "hello"])
    assert set(res.rejected) == {1, 2, 3, 4}
    assert np.isnan(res.original_score[1]) and not np.isnan(res.original_score[0])
    assert not res.flipped[1]


def test_model_that_ignores_group_terms_never_flips(tiny_model_dirs) -> None:  # noqa: ANN001
    # one-word terms only: a multi-word swap ("old" -> "middle aged") shifts positions, which a model may see
    lex = Lexicon.default().select(["gender", "religion", "sexuality"])
    scorer = CounterfactualScorer(tiny_model_dirs["ignores"], lex, device="cpu")
    res = scorer.score(TEXTS + GENDERED)
    stats = CounterfactualStats()
    stats.update(res, model="ignores")
    assert res.n_variants.sum() > 20
    assert stats.flip_rate("ignores", "gender") == 0.0
    assert float(np.nanmax(res.max_abs_change)) < 1e-5


def test_model_that_keys_on_gender_terms_always_flips(tiny_model_dirs) -> None:  # noqa: ANN001
    scorer = CounterfactualScorer(tiny_model_dirs["keys"], Lexicon.default().select(["gender"]), device="cpu")
    res = scorer.score(GENDERED)
    stats = CounterfactualStats()
    stats.update(res, model="keys")
    assert stats.get("keys", "gender").n_texts == len(GENDERED)
    assert stats.flip_rate("keys", "gender") == 1.0
    assert res.flipped.all()
    # the averaged score sits between the two sides
    np.testing.assert_allclose(res.debiased_score, 0.5, atol=0.05)
    top = stats.get("keys", "gender").terms.top(3)
    assert top[0].mean_abs > 0.9


def test_stats_merge_equals_whole(tiny_model_dirs) -> None:  # noqa: ANN001
    scorer = CounterfactualScorer(tiny_model_dirs["random"], device="cpu")
    whole, a, b = CounterfactualStats(), CounterfactualStats(), CounterfactualStats()
    whole.update(scorer.score(TEXTS))
    a.update(scorer.score(TEXTS[:4]))
    b.update(scorer.score(TEXTS[4:]))
    merged = a + b
    assert merged.keys() == whole.keys()
    for key in whole.keys():
        w, m = whole.get(*key), merged.get(*key)
        assert (w.n_texts, w.n_flipped, w.n_variants) == (m.n_texts, m.n_flipped, m.n_variants)
        assert w.mean_abs_change() == pytest.approx(m.mean_abs_change(), abs=1e-5)
        assert w.max_abs_change == pytest.approx(m.max_abs_change, abs=1e-5)  # padding width differs per batch
        assert [r.term for r in w.terms.rows()] == [r.term for r in m.terms.rows()]


def test_dynamic_batcher_matches_direct_scoring(random_scorer) -> None:  # noqa: ANN001
    direct = random_scorer.score(TEXTS)
    with random_scorer.batcher(max_batch=4, max_wait_ms=20) as batcher:
        futures = [batcher.submit(t) for t in TEXTS]
        got = [f.result(timeout=30) for f in futures]
    assert max(batcher.batch_sizes) <= 4 and sum(batcher.batch_sizes) == len(TEXTS)
    np.testing.assert_allclose([g["score"] for g in got], direct.original_score, atol=1e-5)


def test_paired_changes_attributed_to_terms(tiny_model_dirs) -> None:  # noqa: ANN001
    scorer = CounterfactualScorer(tiny_model_dirs["keys"], device="cpu")
    rep = paired_score_changes(scorer.score_texts, ["my son is kind", "hello", "he said"], ["my daughter is kind", "hello", "she said"])
    assert (rep.n_pairs, rep.n_changed, rep.n_attributed) == (3, 2, 2)
    rows = {r.term: r for r in rep.terms.rows()}
    assert rows["son"].count_out == 1 and rows["son"].mean_signed_out < -0.9
    assert rows["daughter"].count_in == 1


@pytest.mark.data
def test_fuzzed_toxicity_pairs_report_per_identity_term(tiny_model_dirs, shared_data) -> None:  # noqa: ANN001
    base = shared_data / "jigsaw-bias"
    read = lambda name: [r["comment"] for r in csv.DictReader(open(base / name, encoding="utf-8"))]  # noqa: E731
    originals, fuzzed = read("toxicity_nonfuzzed_testset.csv"), read("toxicity_fuzzed_testset.csv")
    assert len(originals) == len(fuzzed)
    scorer = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", max_length=32)
    rep = paired_score_changes(scorer.score_texts, originals[:400], fuzzed[:400], Lexicon.default())
    assert rep.n_changed > 20 and rep.n_attributed >= 0.8 * rep.n_changed
    identity = {t for a in ("sexuality", "religion", "ethnicity") for t in Lexicon.default().attributes[a].terms}
    table = rep.table(50)
    assert any(row["term"] in identity and row["swapped_out"] > 0 for row in table)
    assert all(row["mean_abs_change"] >= 0 for row in table)
