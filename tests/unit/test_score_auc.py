"""Subgroup, BPSN and BNSP AUC from streaming score histograms, against scikit-learn's roc_auc_score."""

from __future__ import annotations

import csv
import json
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from fairwatch.monitor.score_auc import N_SCORE_BINS, ScoreHistograms, auc_from_histograms, bias_aucs, score_bins


def reference(group: np.ndarray, score: np.ndarray, label: np.ndarray, g: int) -> dict[str, float]:
    """The three AUCs of group ``g`` computed from raw scores with scikit-learn (Borkan et al.'s definitions)."""
    sub, rest = group == g, group != g

    def auc(mask: np.ndarray) -> float:
        y = label[mask]
        return float(roc_auc_score(y, score[mask])) if 0 < y.sum() < y.size else float("nan")

    return {
        "subgroup_auc": auc(sub),
        "bpsn_auc": auc((rest & (label == 1)) | (sub & (label == 0))),
        "bnsp_auc": auc((sub & (label == 1)) | (rest & (label == 0))),
    }


def stream(group: np.ndarray, score: np.ndarray, label: np.ndarray, n_groups: int, batch: int = 97) -> ScoreHistograms:
    h = ScoreHistograms()
    for start in range(0, group.size, batch):
        s = slice(start, start + batch)
        h.update("a", group[s], score[s], label[s], n_groups)
    return h


def synthetic(n: int, n_groups: int, seed: int, grid: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n)
    label = (rng.random(n) < 0.3 + 0.1 * group / n_groups).astype(np.int64)
    # a score that separates the labels, worse for the last group (so the three AUCs differ)
    score = 1 / (1 + np.exp(-(1.5 * label - 0.7 + 0.8 * (group == n_groups - 1) + rng.normal(0, 1, n))))
    if grid is not None:
        score = np.round(score / grid) * grid  # every score on a bin edge's grid: the bins make no new ties
    return group, score, label


def test_scores_on_a_grid_give_scikit_learns_auc_exactly() -> None:
    group, score, label = synthetic(5000, 4, seed=1, grid=0.01)
    got = bias_aucs(stream(group, score, label, 4).table("a", 4))
    for g in range(4):
        for metric, expected in reference(group, score, label, g).items():
            assert got[metric].value[g] == pytest.approx(expected, abs=1e-12)
            assert got[metric].tie_error_bound[g] > 0  # real ties in the data, counted half as sklearn does


def test_continuous_scores_stay_within_the_tie_bound_of_scikit_learn() -> None:
    group, score, label = synthetic(5000, 3, seed=2, grid=None)
    got = bias_aucs(stream(group, score, label, 3).table("a", 3))
    for g in range(3):
        for metric, expected in reference(group, score, label, g).items():
            e = got[metric]
            assert abs(e.value[g] - expected) <= e.tie_error_bound[g] + 1e-12
            assert e.tie_error_bound[g] < 0.01  # 200 bins on [0, 1]: a small error at this size
            assert e.lower[g] < expected < e.upper[g]


def test_integer_scores_outside_the_unit_interval_are_exact() -> None:
    rng = np.random.default_rng(3)
    group, label = rng.integers(0, 2, 3000), rng.integers(0, 2, 3000)
    score = np.clip(rng.integers(1, 11, 3000) + 3 * label - 1, 1, 10).astype(float)  # deciles, as COMPAS scores
    got = bias_aucs(stream(group, score, label, 2).table("a", 2))
    for metric, expected in reference(group, score, label, 0).items():
        assert got[metric].value[0] == pytest.approx(expected, abs=1e-12)


def test_bins_are_monotone_in_the_score() -> None:
    s = np.sort(np.concatenate([np.linspace(-5000, 5000, 20001), np.linspace(0, 1, 1001), [-1e300, 1e300]]))
    b = score_bins(s)
    assert (np.diff(b) >= 0).all() and b.min() == 0 and b.max() == N_SCORE_BINS - 1
    assert len(np.unique(score_bins(np.arange(1.0, 11.0)))) == 10  # deciles never share a bin
    assert score_bins(np.array([np.nan]))[0] == -1


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 400))
def test_merge_of_halves_equals_the_whole(seed: int, cut: int) -> None:
    group, score, label = synthetic(400, 3, seed=seed, grid=None)
    whole = stream(group, score, label, 3, batch=400)
    first = stream(group[:cut], score[:cut], label[:cut], 3)
    second = stream(group[cut:], score[cut:], label[cut:], 3)
    np.testing.assert_array_equal(first.merge(second).table("a", 3), whole.table("a", 3))


def test_events_without_score_label_or_group_are_not_counted() -> None:
    h = ScoreHistograms()
    h.update("a", np.array([0, 0, -1, 1]), np.array([0.5, np.nan, 0.5, 0.5]), np.array([1, 1, 1, -1]), 2)
    assert h.table("a", 2).sum() == 1


def test_empty_sides_give_nan_not_an_error() -> None:
    e = auc_from_histograms(np.zeros((1, 5)), np.ones((1, 5)))
    assert np.isnan(e.value[0]) and np.isnan(e.lower[0])


def test_pipeline_report_and_metrics_carry_the_aucs() -> None:
    from fairwatch.monitor import metric_names as names
    from fairwatch.monitor.config import MonitorConfig
    from fairwatch.monitor.exporter import make_registry
    from fairwatch.monitor.pipeline import Pipeline
    from fairwatch.monitor.report import build_report, format_table, to_json
    from prometheus_client import generate_latest

    group, score, label = synthetic(3000, 3, seed=4, grid=0.01)
    pipeline = Pipeline(MonitorConfig(attributes=["race"]))
    lines = [
        json.dumps({"event_id": str(i), "ts": "2026-11-22T10:00:00Z", "model": "m", "prediction": int(s >= 0.5),
                    "score": float(s), "groups": {"race": f"g{g}"},
                    # half the labels arrive inline, half later as outcomes: both paths count once
                    **({"label": int(y)} if i % 2 else {})})
        for i, (g, s, y) in enumerate(zip(group, score, label))
    ]
    pipeline.process_lines(lines)
    pipeline.process_lines([json.dumps({"event_id": str(i), "ts": "2026-11-23T10:00:00Z", "label": int(y)})
                            for i, y in enumerate(label) if i % 2 == 0])
    report = build_report(pipeline)
    body = report["attributes"]["race"]["score_auc"]
    for g in range(3):
        expected = reference(group, score, label, g)
        for metric in names.AUC_METRICS:
            assert body[f"g{g}"][metric]["value"] == pytest.approx(expected[metric], abs=1e-12)
    assert "score AUCs per group" in format_table(report) and json.loads(to_json(report))
    exposition = generate_latest(make_registry(pipeline)).decode()
    assert f'{names.GROUP_SCORE_AUC}{{attribute="race",group="g0",metric="bpsn_auc",model="m"}}' in exposition
    assert names.GROUP_SCORE_AUC_LOWER in exposition and names.GROUP_SCORE_AUC_UPPER in exposition


@pytest.mark.data
def test_compas_decile_scores_match_scikit_learn_exactly(compas_csv) -> None:  # noqa: ANN001
    import pandas as pd
    from helpers import COMPAS_FLAGS, replay_json

    frame = pd.read_csv(compas_csv)
    report = replay_json(compas_csv, *COMPAS_FLAGS, "--group-col", "race", "--group-col", "sex")
    for attribute in ("race", "sex"):
        body = report["attributes"][attribute]["score_auc"]
        codes, names_ = pd.factorize(frame[attribute])
        for g, name in enumerate(names_):
            expected = reference(codes, frame["decile_score"].to_numpy(float), frame["two_year_recid"].to_numpy(), g)
            for metric, value in expected.items():
                got = body[name][metric]["value"]
                if np.isnan(value):
                    assert got is None
                else:
                    assert got == pytest.approx(value, abs=1e-9), (attribute, name, metric)


@pytest.mark.data
def test_jigsaw_templates_with_a_deterministic_score(shared_data, tmp_path) -> None:  # noqa: ANN001
    """76,564 templated sentences, group = identity term, score a fixed function of the words (no model)."""
    from helpers import replay_json

    with (shared_data / "jigsaw-bias" / "identity_terms.csv").open(newline="") as f:
        terms = sorted((r["term"] for r in csv.DictReader(f)), key=len, reverse=True)
    insults = {"hate", "kill", "stupid", "ugly", "disgusting", "dumb", "evil", "terrible", "horrible", "worthless"}
    rows = []
    with (shared_data / "jigsaw-bias" / "en_sentence_templates.csv").open(newline="") as f:
        for i, r in enumerate(csv.DictReader(f)):
            words = r["phrase"].lower().split()
            term = next((t for t in terms if f" {t} " in f" {r['phrase'].lower()} "), "none")
            # continuous: word evidence, a bias against two terms, and a per-phrase jitter inside the bins
            jitter = (zlib.crc32(r["phrase"].encode()) % 1000) / 1000
            logit = 1.2 * sum(w in insults for w in words) - 1.0 + 0.6 * (term in ("gay", "muslim")) + jitter
            rows.append({"id": i, "label": int(r["toxicity"] == "toxic"), "score": 1 / (1 + np.exp(-logit)),
                         "identity": term})
    path = tmp_path / "templates.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "score", "identity"])
        writer.writeheader()
        writer.writerows(rows)
    report = replay_json(path, "--id-col", "id", "--label-col", "label", "--score-col", "score", "--group-col", "identity",
                         "--threshold", "0.5")
    body = report["attributes"]["identity"]["score_auc"]
    names_ = sorted({r["identity"] for r in rows})
    code = {n: k for k, n in enumerate(names_)}
    group = np.array([code[r["identity"]] for r in rows])
    score = np.array([r["score"] for r in rows])
    label = np.array([r["label"] for r in rows])
    worst, widest = 0.0, 0.0
    for name in names_:
        for metric, expected in reference(group, score, label, code[name]).items():
            got = body[name][metric]
            assert abs(got["value"] - expected) <= got["tie_error_bound"] + 1e-12, (name, metric)
            worst, widest = max(worst, abs(got["value"] - expected)), max(widest, got["tie_error_bound"])
    print(f"jigsaw templates: max |histogram AUC - roc_auc_score| {worst:.2e}, max tie bound {widest:.2e}")  # docs
    assert worst < 5e-3
    assert body["gay"]["bpsn_auc"]["value"] < body["christian"]["bpsn_auc"]["value"]  # the built-in bias shows
