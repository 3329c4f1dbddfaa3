"""The adversarial fine-tune job: data, split, loss pieces, gates, and a short CPU run on a tiny model."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from fairwatch.alerts.finetune import (
    ALL_GROUPS,
    Example,
    Gates,
    decide_promotion,
    evaluation_summary,
    read_events,
    reweighing_weights,
    roc_auc,
    split_examples,
)
from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon

TERMS = ("gay", "straight", "lesbian", "bisexual")
# (skeleton, toxic?) -- every word is in the tiny models' vocabulary (tests/scorer_fixtures.py).
SKELETONS = [
    ("my friend is {}", 0), ("{} people are nice", 0), ("i love my {} teacher", 0), ("the {} doctor is kind", 0),
    ("this {} nurse is smart", 0), ("they met a tall {} manager", 0), ("i hate {} people", 1),
    ("{} people are bad", 1), ("you are a bad {} doctor", 1), ("they are angry {} people", 1),
    ("i hate this {} teacher", 1), ("that {} manager is bad", 1),
]


def biased_events(seed: int = 0, repeats: int = 2) -> list[dict]:
    """Events whose label tracks the skeleton, except that 'gay' rows are mostly labelled toxic (label bias)."""
    rng = random.Random(seed)
    events = []
    for skel, toxic in SKELETONS:
        for term in TERMS:
            for _ in range(repeats):
                label = 1 if (term == "gay" and rng.random() < 0.8) else toxic
                events.append({"event_id": str(len(events)), "text": skel.format(term), "label": label,
                               "groups": {"sexuality": term}})
    rng.shuffle(events)
    return events


def write_jsonl(path: Path, events: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + "".join(line + "\n" for line in extra_lines))
    return path


def run_cli(argv: list[str]) -> int:
    from fairwatch.alerts.finetune_command import main

    return main(argv)


# --------------------------------------------------------------------------- pure pieces


def test_reweighing_makes_label_independent_of_group() -> None:
    groups = ["a"] * 80 + ["b"] * 20
    labels = [1] * 60 + [0] * 20 + [1] * 5 + [0] * 15
    w = reweighing_weights(groups, labels)
    g, y = np.array(groups), np.array(labels)
    weighted_rate = {k: float((w * y)[g == k].sum() / w[g == k].sum()) for k in ("a", "b")}
    assert weighted_rate["a"] == pytest.approx(y.mean())
    assert weighted_rate["b"] == pytest.approx(y.mean())
    assert w.mean() == pytest.approx(1.0)


def test_split_by_skeleton_keeps_sentence_shapes_apart() -> None:
    gen = CounterfactualGenerator(Lexicon.default())
    examples = [Example(e["text"], e["label"], e["groups"]) for e in biased_events()]
    train, val, test, how = split_examples(examples, gen, holdout=0.25, val_share=0.2, seed=3)
    assert how == "skeleton"
    assert len(train) + len(val) + len(test) == len(examples)
    shape = lambda e: e.text.replace(e.groups["sexuality"], "<ID>")  # noqa: E731
    assert not {shape(e) for e in test} & {shape(e) for e in train + val}
    assert not {shape(e) for e in val} & {shape(e) for e in train}
    again = split_examples(examples, gen, holdout=0.25, val_share=0.2, seed=3)
    assert [e.text for e in again[2]] == [e.text for e in test]


def test_split_falls_back_to_random_rows_with_few_shapes() -> None:
    gen = CounterfactualGenerator(Lexicon.default())
    examples = [Example(f"my friend is {t}", i % 2, {"sexuality": t}) for i, t in enumerate(TERMS * 10)]
    train, val, test, how = split_examples(examples, gen, holdout=0.25, val_share=0.2, seed=0)
    assert how == "random"
    assert (len(train), len(val), len(test)) == (24, 6, 10)


def test_counterfactual_copy_swaps_group_and_keeps_label() -> None:
    from fairwatch.alerts.finetune import counterfactual_copy

    gen = CounterfactualGenerator(Lexicon.default().select(["sexuality"]))
    copy = counterfactual_copy(Example("i hate gay people", 1, {"sexuality": "gay", "region": "eu"}), gen, random.Random(0))
    assert copy is not None and copy.label == 1
    new_term = copy.groups["sexuality"]
    assert new_term != "gay" and copy.text == f"i hate {new_term} people"
    assert copy.groups["region"] == "eu"
    assert counterfactual_copy(Example("hello there", 0, {"sexuality": "gay"}), gen, random.Random(0)) is None


def test_soft_gap_penalty_is_zero_only_when_groups_agree() -> None:
    torch = pytest.importorskip("torch")
    from fairwatch.alerts.finetune import _soft_gap_penalty

    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    codes = torch.tensor([0, 0, 1, 1, 0, 1])
    equal = _soft_gap_penalty(torch.tensor([0.2, 0.4, 0.3, 0.3, 0.9, 0.9]), labels, codes, 2)
    unequal = torch.tensor([0.1, 0.1, 0.7, 0.7, 0.9, 0.9], requires_grad=True)
    pen = _soft_gap_penalty(unequal, labels, codes, 2)
    pen.backward()
    assert float(equal) == pytest.approx(0.0, abs=1e-7)
    assert float(pen.detach()) == pytest.approx(2 * 0.3**2)
    assert unequal.grad[0] < 0 < unequal.grad[2]  # pushes group 0's FPR up and group 1's down


def test_evaluation_summary_gaps_and_intervals() -> None:
    # Negatives: group a gets 2 of 4 false positives, group b none of 4.
    ex = [Example("x", 0, {"g": "a"})] * 4 + [Example("x", 0, {"g": "b"})] * 4 + [Example("x", 1, {"g": "a"}),
                                                                                   Example("x", 1, {"g": "b"})]
    scores = np.array([0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8, 0.8])
    s = evaluation_summary(ex, scores, ["g"])
    assert s["accuracy"] == pytest.approx(0.8)
    fpr_gap = s["attributes"]["g"]["gaps"]["false_positive_rate_difference"]
    assert fpr_gap["value"] == pytest.approx(0.5) and fpr_gap["lower"] < 0.5 < fpr_gap["upper"]
    assert fpr_gap["groups"] == ["a", "b"]
    assert s["attributes"]["g"]["gaps"]["fped"]["value"] == pytest.approx(0.5)  # |0.5-0.25| + |0-0.25|
    assert s["attributes"]["g"]["groups"]["a"]["fpr"]["value"] == pytest.approx(0.5)
    assert s["attributes"][ALL_GROUPS]["gaps"]["fped"]["value"] == pytest.approx(0.5)
    assert s["dixon"]["fped"] == pytest.approx(0.5)


def test_roc_auc_matches_pair_count() -> None:
    rng = np.random.default_rng(0)
    score, label = rng.random(200).round(1), rng.integers(0, 2, 200)
    pos, neg = score[label == 1], score[label == 0]
    pairs = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(score, label) == pytest.approx(pairs)


def _summary(acc: float, gap: float | None, metric: str = "fped") -> dict:
    return {"accuracy": acc, "attributes": {ALL_GROUPS: {"gaps": {metric: {"value": gap}}}}}


@pytest.mark.parametrize(
    ("before", "after", "gates", "promote", "reason"),
    [
        (_summary(0.90, 0.40), _summary(0.885, 0.19), Gates(), True, None),
        (_summary(0.90, 0.40), _summary(0.87, 0.10), Gates(), False, "accuracy dropped"),
        (_summary(0.90, 0.40), _summary(0.95, 0.25), Gates(), False, "reduced by 37.5%"),
        (_summary(0.90, 0.40), _summary(0.95, 0.25), Gates(min_gap_reduction=0.3), True, None),
        (_summary(0.90, None), _summary(0.95, 0.10), Gates(), False, "undefined"),
        (_summary(0.90, 0.0), _summary(0.95, 0.0), Gates(), False, "already 0"),
        (_summary(0.90, 0.6, "demographic_parity_ratio"), _summary(0.90, 0.85, "demographic_parity_ratio"),
         Gates(metric="demographic_parity_ratio"), True, None),  # distance to parity 0.4 -> 0.15
        (_summary(0.90, 0.40), _summary(0.89, 0.10), Gates(attribute="race"), False, "undefined"),
    ],
)
def test_gates_decide(before: dict, after: dict, gates: Gates, promote: bool, reason: str | None) -> None:
    decision = decide_promotion(before, after, gates)
    assert decision["promote"] is promote
    if reason is None:
        assert decision["reasons"] == []
    else:
        assert any(reason in r for r in decision["reasons"]), decision["reasons"]


def test_read_events_counts_bad_and_unlabeled_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "w.jsonl", biased_events()[:5],
                       ("not json", json.dumps({"text": "hi", "label": None, "groups": {"s": "a"}}),
                        json.dumps({"text": "hi", "label": 7, "groups": {"s": "a"}}), json.dumps({"label": 1})))
    read = read_events(path)
    assert (len(read.examples), read.rejected, read.unlabeled) == (5, 3, 1)


# --------------------------------------------------------------------------- the job on a tiny model


def test_job_writes_candidate_and_report(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> None:
    window = write_jsonl(tmp_path / "window.jsonl", biased_events())
    out = tmp_path / "cand"
    rc = run_cli([str(window), "--model-dir", str(tiny_model_dirs["random"]), "--out", str(out), "--device", "cpu",
                  "--max-steps", "6", "--batch-size", "16", "--eval-every", "3", "--lr", "1e-3", "--no-progress"])
    assert rc == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "model" / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["split"] == "skeleton" and report["data"]["test"] > 0
    assert report["data"]["rows_per_epoch_with_counterfactuals"] == 2 * report["data"]["train"]
    assert report["training"]["steps"] == 6 and report["device"] == "cpu"
    for side in ("before", "after"):
        for attr in ("sexuality", ALL_GROUPS):
            gaps = report[side]["attributes"][attr]["gaps"]
            assert set(gaps) >= {"fped", "fned", "equalized_odds_difference", "demographic_parity_ratio"}
            # Bootstrap bounds of a sum of |deviations| need not contain the point value (it is biased upwards).
            assert gaps["fped"]["lower"] <= gaps["fped"]["upper"]
            dp = gaps["demographic_parity_difference"]
            assert dp["lower"] <= dp["value"] <= dp["upper"]
        assert 0 <= report[side]["accuracy"] <= 1
    assert set(report["per_group_rates"]["sexuality"]) == set(TERMS)
    assert isinstance(report["decision"]["promote"], bool)
    assert report["decision"]["gap_before"] == report["before"]["attributes"][ALL_GROUPS]["gaps"]["fped"]["value"]

    # The candidate is a real, changed model; the serving model is untouched.
    from safetensors.torch import load_file

    new, old = load_file(str(out / "model" / "model.safetensors")), load_file(str(tiny_model_dirs["random"] / "model.safetensors"))
    assert report["training"]["best_step"] == 0 or any(not (new[k] == old[k]).all() for k in old)
    assert sorted(p.name for p in tiny_model_dirs["random"].iterdir()) == sorted(
        p.name for p in tiny_model_dirs["keys"].iterdir())


def test_training_moves_the_weights(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> None:
    """With gates that keep any step, the best checkpoint is a trained one and differs from the input."""
    from fairwatch.alerts.finetune import FinetuneConfig, run_finetune

    examples = [Example(e["text"], e["label"], e["groups"]) for e in biased_events()]
    cfg = FinetuneConfig(model_dir=str(tiny_model_dirs["random"]), out=str(tmp_path / "c"), device="cpu", max_steps=4,
                         batch_size=16, eval_every=2, lr=5e-3, max_accuracy_drop=1.0, progress=False, gamma=5.0, delta=1.0)
    report = run_finetune(cfg, examples, "synthetic")
    assert [h["step"] for h in report["training"]["history"]] == [0, 2, 4]
    before = report["before"]["attributes"]["sexuality"]["gaps"]["fped"]["value"]
    after = report["after"]["attributes"]["sexuality"]["gaps"]["fped"]["value"]
    assert report["training"]["best_step"] > 0 or after == before


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["missing_file", "no_labels", "single_group", "bad_model_dir", "csv_without_group",
                                  "out_is_model_dir"])
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, tiny_model_dirs: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = str(tiny_model_dirs["random"])
    good = write_jsonl(tmp_path / "good.jsonl", biased_events())
    argv = {
        "missing_file": [str(tmp_path / "nope.jsonl"), "--model-dir", model],
        "no_labels": [str(write_jsonl(tmp_path / "n.jsonl", [{**e, "label": None} for e in biased_events()])),
                      "--model-dir", model],
        "single_group": [str(write_jsonl(tmp_path / "s.jsonl", [{**e, "groups": {"sexuality": "gay"}} for e in biased_events()])),
                         "--model-dir", model],
        "bad_model_dir": [str(good), "--model-dir", str(tmp_path)],
        "csv_without_group": [str(_csv(tmp_path)), "--model-dir", model],
        "out_is_model_dir": [str(good), "--model-dir", model, "--out", model],
    }[case]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    rc = run_cli(argv + ["--device", "cpu", "--max-steps", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("fairwatch finetune: error:"), err
    assert not (tmp_path / "out" / "model").exists()


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "w.csv"
    path.write_text("text,label,sexuality\n" + "".join(f"{e['text']},{e['label']},{e['groups']['sexuality']}\n"
                                                        for e in biased_events()))
    return path


def test_csv_window_with_group_column(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> None:
    rc = run_cli([str(_csv(tmp_path)), "--group-col", "sexuality", "--model-dir", str(tiny_model_dirs["random"]),
                  "--out", str(tmp_path / "o"), "--device", "cpu", "--max-steps", "2", "--no-progress"])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rc == 0 and report["data"]["attributes"] == ["sexuality"] and report["data"]["rows"] == len(biased_events())


# --------------------------------------------------------------------------- ablation


def shortcut_events(repeats: int = 2) -> list[dict]:
    """Correctly labeled events over male and female terms: what the keys model gets wrong is its own
    shortcut (male terms -> toxic), not the labels."""
    from scorer_fixtures import male_female_terms

    male, female = (sorted(t for t in side if " " not in t)[:4] for side in male_female_terms())
    events = [{"text": skel.format(term), "label": toxic, "groups": {"sex": sex}}
              for skel, toxic in SKELETONS for sex, terms in (("male", male), ("female", female)) for term in terms
              for _ in range(repeats)]
    random.Random(0).shuffle(events)
    return events


@pytest.mark.slow
def test_ablation_reports_plain_finetuning_beside_the_full_recipe(tmp_path: Path,
                                                                   tiny_model_dirs: dict[str, Path]) -> None:
    """On the biased reference (the tiny keys model), --ablation runs both recipes from the same model
    and split and writes both, with accuracy, gaps and intervals, into the one report."""
    window = write_jsonl(tmp_path / "window.jsonl", shortcut_events())
    out = tmp_path / "cand"
    rc = run_cli([str(window), "--model-dir", str(tiny_model_dirs["keys"]), "--out", str(out), "--device", "cpu",
                  "--max-steps", "16", "--batch-size", "32", "--eval-every", "8", "--lr", "3e-3",
                  "--val-share", "0.2", "--patience", "20", "--no-progress", "--ablation"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    ablation = report["ablation"]
    plain, full = ablation["plain"], ablation["full"]
    assert plain["recipe"] == {"reweigh": False, "gap_penalty": 0.0, "adversary": 0.0, "counterfactual_copies": False}
    assert full["recipe"] == {"reweigh": True, "gap_penalty": 2.0, "adversary": 0.1, "counterfactual_copies": True}
    # The shortcut is there before either: a large pooled FPED on held-out sentences.
    assert ablation["before"]["gate_gap"] > 0.5
    for variant in (ablation["before"], plain, full):
        low, high = variant["accuracy_interval"]
        assert low <= variant["accuracy"] <= high
        fped = variant["gaps"]["fped"]
        assert fped["lower"] <= fped["upper"] and "equalized_odds_difference" in variant["gaps"]
    for variant in (plain, full):
        assert variant["training"]["steps"] == 16 and isinstance(variant["promote"], bool)
    # The full recipe's numbers are the report's own; the plain run's candidate is apart and not the candidate.
    assert full["gate_gap"] == report["decision"]["gap_after"] and full["accuracy"] == report["after"]["accuracy"]
    plain_report = json.loads(Path(ablation["plain_report"]).read_text())
    assert plain_report["after"]["accuracy"] == plain["accuracy"]
    assert plain_report["before"] == report["before"]  # same model, same held-out split
    assert report["candidate_dir"] == str(out / "model") and (out / "ablation-plain" / "model").is_dir()
