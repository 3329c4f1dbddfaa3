"""The scorer wired into the pipeline: parallel preparation, derived outputs, replay, /metrics (CPU, tiny models)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers import REPO, run_cli

pytest.importorskip("torch")
pytest.importorskip("transformers")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from fairwatch.monitor.config import MonitorConfig  # noqa: E402
from fairwatch.monitor.pipeline import Pipeline  # noqa: E402
from fairwatch.monitor.scorer import metric_names as names  # noqa: E402
from fairwatch.monitor.scorer.counterfactuals import Lexicon  # noqa: E402
from fairwatch.monitor.scorer.scoring import CounterfactualScorer  # noqa: E402
from fairwatch.monitor.scorer.step import ScorerStep  # noqa: E402

TEXTS = [
    "my son went home .", "She is kind", None, "Her book is good", "hello there", "",
    "the muslim teacher said hello", "John met Mary at the park yesterday",
    "His daughter's friend is a gay doctor", "the manager of the theme park",
    "they love the black dog and the white car", "an old nurse and a young doctor",
    "my husband's car", "the girls are nice", "he is a smart doctor",
]
MALE = ["he is kind", "my son went home", "the man saw his friend", "my father wrote a book", "his brother is nice",
        "the boy is smart", "my husband is a doctor", "he said hello"]
FEMALE = ["she is kind", "my daughter went home", "the woman saw her friend", "my mother wrote a book",
          "her sister is nice", "the girl is smart", "my wife is a doctor", "she said hello"]


def _same_result(a, b, atol: float = 0.0) -> None:  # noqa: ANN001
    """Equal results; ``atol`` for scores from batches formed differently (float rounding alone)."""
    for field in ("original_score", "debiased_score", "max_abs_change"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=0, atol=atol, err_msg=field)
    assert np.array_equal(a.flipped, b.flipped)
    assert np.array_equal(a.n_variants, b.n_variants)
    assert a.rejected == b.rejected
    assert list(a.attributes) == list(b.attributes)
    for name, da in a.attributes.items():
        db = b.attributes[name]
        assert np.array_equal(da.text_index, db.text_index)
        np.testing.assert_allclose(da.variant_score, db.variant_score, rtol=0, atol=atol)
        assert da.swaps == db.swaps


def test_parallel_preparation_scores_exactly_like_serial(tiny_model_dirs) -> None:  # noqa: ANN001
    serial = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=0, chunk_texts=4, max_batch=5)
    parallel = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=2, chunk_texts=4, max_batch=5)
    parallel.preparer.min_parallel_texts = 1  # force the pool even for this small batch
    try:
        a = serial.score(TEXTS)
        b = parallel.score(TEXTS)
        assert parallel.preparer._pool is not None  # the pool really ran
        _same_result(a, b)
        assert a.n_variants.sum() > 20 and set(a.rejected) == {2, 5}
        assert a.attributes["gender"].swaps[0] == (("son", "daughter"),)
        # streaming several batches with look-ahead gives each batch's own result; a half does not fill
        # both workers in chunks of 4, so it is chunked (hence batched) otherwise than in-process
        halves = [TEXTS[:7], TEXTS[7:]]
        for got, texts in zip(parallel.score_stream(halves, lookahead=1), halves):
            _same_result(got, serial.score(texts), atol=1e-6)
    finally:
        parallel.close()
    assert serial.retokenized == 0 and serial.spliced > 0  # a WordLevel tokenizer splices every variant


def _event(i: int, text: str | None, sex: str, prediction: int, score: float, label: int | None) -> str:
    event = {"event_id": f"e{i}", "ts": 1_795_000_000 + i, "model": "toxic", "prediction": prediction,
             "score": score, "groups": {"sex": sex}, "label": label}
    if text is not None:
        event["text"] = text
    return json.dumps(event)


def _gendered_events(n_repeat: int = 6) -> list[str]:
    """The 'keys' model scores male-term texts ~1 and female-term texts ~0; events carry those decisions.

    A text and its swap average to ~0.5 for both groups, so tests put the
    scorer threshold at 0.6: the debiased decisions then never sit on a
    rounding error.
    """
    lines = []
    i = 0
    for _ in range(n_repeat):
        for m, f in zip(MALE, FEMALE):
            lines.append(_event(i, m, "male", 1, 0.99, i % 2))
            lines.append(_event(i + 1, f, "female", 0, 0.01, i % 2))
            i += 2
    return lines


def test_debiased_gap_is_smaller_than_the_original_gap(tiny_model_dirs) -> None:  # noqa: ANN001
    scorer = CounterfactualScorer(tiny_model_dirs["keys"], device="cpu", workers=0, threshold=0.6)
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = ScorerStep(scorer)
    batch = [pipeline.parser.parse(line) for line in _gendered_events()]
    step.process(pipeline, batch)
    step.process(pipeline, batch)  # a redelivery: dropped, and not counted again in the stats
    assert set(pipeline.models) == {"toxic", "toxic:debiased"}
    assert pipeline.stats.duplicates == len(batch)

    def gap(model: str, metric: str) -> float:
        rows = pipeline.models[model].since_start.counts["sex"]
        groups = pipeline.models[model].index["sex"].values
        from fairwatch.monitor.rates import group_rates

        rates = group_rates(rows)[metric][0]
        by = dict(zip(groups, rates))
        return abs(by["male"] - by["female"])

    assert gap("toxic", "selection_rate") == pytest.approx(1.0)
    assert gap("toxic:debiased", "selection_rate") < 0.05
    assert gap("toxic:debiased", "mean_score") < 0.05 < gap("toxic", "mean_score")
    # labels follow into the derived model
    assert pipeline.models["toxic:debiased"].journal.label[: len(batch)].tolist() == [e.label for e in batch]
    gender = step.stats.get("toxic", "gender")
    assert gender.n_texts == len(batch)  # every text counted once despite the redelivery
    assert gender.flip_rate() == 1.0


def test_postprocessed_outputs_after_enough_labels(tiny_model_dirs) -> None:  # noqa: ANN001
    scorer = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=0)
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = ScorerStep(scorer, postprocess_attribute="sex", refit_every=50, min_group_size=5)
    rng = np.random.default_rng(1)
    lines = []
    for i in range(120):
        male = i % 2 == 0
        label = int(rng.integers(0, 2))
        score = float(np.clip(0.4 * label + 0.3 + (0.2 if male else 0.0) + rng.normal(0, 0.1), 0, 1))
        lines.append(_event(i, "my son went home" if male else "her book is good", "male" if male else "female",
                            int(score >= 0.5), score, label))
    step.process(pipeline, [pipeline.parser.parse(x) for x in lines[:60]])
    assert "toxic:postprocessed" not in pipeline.models  # nothing before the first fit
    post = step.postprocessors["toxic"]  # fitted after this batch: 60 labels >= 50
    assert post.thresholds_["male"] > post.thresholds_["female"]
    step.process(pipeline, [pipeline.parser.parse(x) for x in lines[60:]])
    held = pipeline.models["toxic:postprocessed"].journal
    assert held.next_seq == 60
    assert step.report()["postprocessing"]["fitted_on_labels"] == {"toxic": 120}


def _write_jsonl(tmp_path, lines):  # noqa: ANN001, ANN202
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_with_scorer_reports_debiased_model_and_counterfactuals(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    path = _write_jsonl(tmp_path, _gendered_events(3) + [_event(999, None, "male", 1, 0.9, None)])
    result = run_cli("replay", path, "--scorer-model", tiny_model_dirs["keys"], "--scorer-device", "cpu",
                     "--scorer-threshold", "0.6", "--report", "json", "--model", "toxic")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["events"] == 49
    debiased = report["models"]["toxic:debiased"]["attributes"]["sex"]
    assert sum(g["n"] for g in debiased["groups"].values()) == 48  # the event without text has no derived output
    assert debiased["gaps"]["demographic_parity_difference"] < 0.05
    assert report["attributes"]["sex"]["gaps"]["demographic_parity_difference"] > 0.9
    gender = report["counterfactual"]["models"]["toxic"]["gender"]
    assert gender["texts"] == 48 and gender["flip_rate"] == 1.0
    assert gender["max_abs_change"] > 0.9
    assert gender["top_terms"] and all(t["mean_abs_change"] > 0.9 for t in gender["top_terms"])


def test_replay_csv_with_scorer_and_table_report(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "events.csv"
    rows = ["id,text,sex,score,label"]
    for i, (m, f) in enumerate(zip(MALE * 5, FEMALE * 5)):
        rows += [f"m{i},{m},male,0.9,{i % 2}", f"f{i},{f},female,0.2,{i % 2}"]
    path.write_text("\n".join(rows) + "\n")
    common = ["replay", path, "--id-col", "id", "--text-col", "text", "--group-col", "sex", "--score-col", "score",
              "--threshold", "0.5", "--label-col", "label", "--scorer-model", tiny_model_dirs["keys"],
              "--scorer-device", "cpu", "--scorer-threshold", "0.6", "--postprocess-attribute", "sex", "--refit-every", "20"]
    result = run_cli(*common, "--report", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["models"]) == {"default", "default:debiased"}  # one batch: the first fit comes after it
    assert report["counterfactual"]["postprocessing"]["fitted_on_labels"] == {"default": 80}
    table = run_cli(*common)
    assert table.returncode == 0, table.stderr
    assert "== counterfactual" in table.stdout and re.search(r"default\s+gender\s+80\s+1\.000", table.stdout)


@pytest.mark.parametrize("flag, content, message", [
    ("--lexicon", '{"attributes": {"gender": {"pairs": [["he"]]}}}', "pairs"),
    ("--lexicon", "not json", "not valid JSON"),
    ("--scorer-model", None, "not found"),
])
def test_bad_scorer_input_is_one_line_and_exit_2(tiny_model_dirs, tmp_path, flag, content, message) -> None:  # noqa: ANN001
    events = _write_jsonl(tmp_path, _gendered_events(1))
    args = ["replay", events, "--scorer-device", "cpu"]
    if flag == "--lexicon":
        lexicon = tmp_path / "lexicon.json"
        lexicon.write_text(content)
        args += ["--scorer-model", tiny_model_dirs["keys"], "--lexicon", lexicon]
    else:
        args += ["--scorer-model", tmp_path / "no-such-model"]
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairwatch replay: error:") and message in lines[0]


def test_collector_exports_counterfactual_series_without_text(tiny_model_dirs) -> None:  # noqa: ANN001
    scorer = CounterfactualScorer(tiny_model_dirs["keys"], device="cpu", workers=0, threshold=0.6)
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = ScorerStep(scorer)
    step.process(pipeline, [pipeline.parser.parse(line) for line in _gendered_events(2)])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(step.collector())
    body = generate_latest(registry).decode()
    assert f'{names.COUNTERFACTUAL_FLIP_RATE}{{attribute="gender",model="toxic"}} 1.0' in body
    assert f'{names.COUNTERFACTUAL_TEXTS}{{attribute="gender",model="toxic"}} 32.0' in body
    assert re.search(names.COUNTERFACTUAL_SCORE_CHANGE + r'\{attribute="gender",model="toxic",stat="max"\} 0\.9', body)
    terms = re.findall(names.COUNTERFACTUAL_TERM_SCORE_CHANGE + r'\{attribute="gender",model="toxic",term="(\w+)"\} 0\.9', body)
    assert len(terms) == names.TOP_TERMS and len(set(terms)) == len(terms)
    assert f"{names.SCORER_SEQUENCES} 64.0" in body  # 32 texts + one gender variant each
    assert f'{names.SCORER_BATCH_SECONDS}_count 1.0' in body
    for text in MALE + FEMALE:
        assert text not in body


def test_replay_serve_has_counterfactual_series(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    path = _write_jsonl(tmp_path, _gendered_events(2))  # 16 per group: above the privacy floor
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairwatch", "replay", str(path), "--scorer-model", str(tiny_model_dirs["keys"]),
         "--scorer-device", "cpu", "--scorer-threshold", "0.6", "--metrics-port", "0", "--report", "json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = None
        for line in proc.stderr:
            found = re.search(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
            port = int(found.group(1)) if found else port
            if "replay done" in line:
                break
        assert port is not None
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert f'{names.COUNTERFACTUAL_FLIP_RATE}{{attribute="gender",model="toxic"}} 1.0' in body
    assert 'fairwatch_group_events_total{attribute="sex",cell="predictions",group="male",model="toxic:debiased"}' in body
    assert "he is kind" not in body


def test_lexicon_terms_cover_every_swap_target() -> None:
    from fairwatch.monitor.scorer.prepare import lexicon_terms

    lex = Lexicon.from_mapping({"attributes": {"g": {"pairs": [["he", "she"]],
                                                      "contextual": {"her": {"before_word": "his", "otherwise": "him"}}}}})
    assert lexicon_terms(lex) == ("he", "her", "him", "his", "she")


def test_warm_up_returns_once_every_worker_has_started(tiny_model_dirs) -> None:  # noqa: ANN001
    parallel = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=2, chunk_texts=4)
    try:
        assert parallel.preparer.warm_up() == 2
        assert len(parallel.preparer._pool._processes) == 2
        assert parallel.preparer.warm_up() == 2  # again: the barrier is reusable
    finally:
        parallel.close()


def test_a_batch_smaller_than_a_chunk_per_worker_still_spreads_over_every_worker(tiny_model_dirs) -> None:  # noqa: ANN001
    serial = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=0, chunk_texts=2048)
    parallel = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=2, chunk_texts=2048)
    parallel.preparer.min_parallel_texts = 1
    try:
        valid = [t for t in TEXTS if t]
        futures = parallel.preparer.submit(valid)
        assert [len(f._texts) for f in futures] == [7, 6]  # two workers: two chunks, not one of 2048
        assert len(serial.preparer.submit(valid)) == 1
        _same_result(parallel.score(TEXTS), serial.score(TEXTS), atol=1e-6)  # batched otherwise: rounding alone
    finally:
        parallel.close()


def test_a_batch_that_fails_on_the_device_still_delivers_the_batch_before(tiny_model_dirs) -> None:  # noqa: ANN001
    scorer = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=0)
    launch, calls = scorer.sequences.launch, []

    def failing_second_batch(ids, lengths):  # noqa: ANN001, ANN202
        calls.append(len(lengths))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return launch(ids, lengths)

    scorer.sequences.launch = failing_second_batch
    delivered = []
    with pytest.raises(RuntimeError, match="simulated"):
        for result in scorer.score_stream([TEXTS[:7], TEXTS[7:]]):
            delivered.append(result)
    assert len(delivered) == 1
    _same_result(delivered[0], CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=0).score(TEXTS[:7]))
    assert scorer.preparer.submit([]) == []


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hung_pool_is_stopped_not_waited_for(tiny_model_dirs) -> None:  # noqa: ANN001
    parallel = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=2)
    assert parallel.preparer.warm_up() == 2
    processes = list(parallel.preparer._pool._processes.values())
    parallel.preparer._pool_broke(terminate=True)  # what warm_up does when the workers' barrier times out
    for process in processes:
        # The executor's own thread may reap a killed worker first, and then Process.is_alive() cannot tell
        # (its waitpid fails and it answers "alive"): ask the system whether the process still runs.
        deadline = time.monotonic() + 30
        while _running(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(process.pid)
    assert parallel.preparer.workers == 0 and parallel.preparer._pool is None
    parallel.close()
    result = parallel.score(TEXTS)  # in-process from now on
    assert result.n_variants.sum() > 20


def test_a_dead_worker_falls_back_to_in_process_preparation(tiny_model_dirs) -> None:  # noqa: ANN001
    serial = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=0, chunk_texts=4, max_batch=5)
    parallel = CounterfactualScorer(tiny_model_dirs["random"], device="cpu", workers=2, chunk_texts=4, max_batch=5)
    parallel.preparer.min_parallel_texts = 1
    try:
        parallel.preparer.warm_up()
        victim = next(iter(parallel.preparer._pool._processes.values()))
        victim.kill()  # one of our own worker processes
        victim.join()
        with pytest.warns(RuntimeWarning, match="worker process died"):
            got = parallel.score(TEXTS)
        _same_result(got, serial.score(TEXTS))
        assert parallel.preparer.workers == 0 and parallel.preparer._pool is None
    finally:
        parallel.close()
