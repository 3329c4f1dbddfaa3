"""The scorer's ONNX Runtime paths against the torch path, on tiny real models (exported and run for real)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from fairwatch.monitor.scorer.cpu_runtime import CpuRuntimeError, check_cpu_runtime  # noqa: E402
from fairwatch.monitor.scorer.scoring import CounterfactualScorer  # noqa: E402

# fp32 ONNX Runtime runs the same arithmetic in another order: scores agree to float rounding.
FP32_SCORE_TOLERANCE = 1e-5
# int8 weights and per-batch int8 activations move scores: on the unit_gain model (scores 0.59 to 0.86,
# std 0.058) by at most 0.0142 when this was written; 0.02 leaves room for other kernels' rounding. A
# decision can change only for a score within that distance of the threshold.
INT8_SCORE_TOLERANCE = 0.02

SUBJECTS = ["my son", "her daughter", "the muslim teacher", "a gay man", "his wife", "the black doctor",
            "an old woman", "the jewish family", "john", "mary", "my father", "the asian student", "people"]
RESTS = ["is kind", "wrote a good book", "is a bad person", "went home yesterday", "said hello",
         "told my friend that the manager was angry and the nurse was kind", "met the tall doctor at the park"]
TEXTS = [f"{s} {r}." for s in SUBJECTS for r in RESTS]  # 91 texts, 5 to 17 tokens: several padded widths


@pytest.fixture(scope="module")
def unit_gain_model(tmp_path_factory: pytest.TempPathFactory):
    from scorer_fixtures import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("unit-gain"), "unit_gain")


def middle_threshold(model_dir) -> float:
    """A threshold near the torch path's median score, half way across the widest gap between its scores there.

    Half the texts fall on each side (decisions that can change), and no score sits on the threshold itself,
    where float rounding alone would decide.
    """
    scores = np.sort(all_scores(CounterfactualScorer(model_dir, device="cpu").score(TEXTS)))
    middle = slice(int(0.4 * scores.size), int(0.6 * scores.size))
    k = middle.start + int(np.argmax(np.diff(scores)[middle]))
    return float((scores[k] + scores[k + 1]) / 2)


def all_scores(result) -> np.ndarray:
    """Originals then every attribute's variants, in a fixed order."""
    return np.concatenate([result.original_score] + [d.variant_score for d in result.attributes.values()])


@pytest.mark.parametrize("kind", ["random", "unit_gain"])
def test_onnx_fp32_gives_the_torch_scores_and_decisions(kind, tiny_model_dirs, unit_gain_model):
    model_dir = unit_gain_model if kind == "unit_gain" else tiny_model_dirs[kind]
    threshold = middle_threshold(model_dir)
    # max_batch=16: several batches of different widths, none shaped like the export's example
    torch_result = CounterfactualScorer(model_dir, device="cpu", max_batch=16, threshold=threshold).score(TEXTS)
    onnx_result = CounterfactualScorer(model_dir, device="cpu", max_batch=16, threshold=threshold,
                                       cpu_runtime="onnx").score(TEXTS)
    assert np.abs(all_scores(onnx_result) - all_scores(torch_result)).max() <= FP32_SCORE_TOLERANCE
    np.testing.assert_array_equal(onnx_result.flipped, torch_result.flipped)
    np.testing.assert_array_equal(onnx_result.n_variants, torch_result.n_variants)
    assert onnx_result.flipped.any() and not onnx_result.flipped.all()  # decisions that can disagree


def test_onnx_int8_keeps_every_decision_outside_its_stated_score_tolerance(unit_gain_model):
    threshold = middle_threshold(unit_gain_model)
    torch_result = CounterfactualScorer(unit_gain_model, device="cpu", threshold=threshold).score(TEXTS)
    int8_result = CounterfactualScorer(unit_gain_model, device="cpu", threshold=threshold,
                                       cpu_runtime="onnx-int8").score(TEXTS)
    torch_scores, int8_scores = all_scores(torch_result), all_scores(int8_result)
    assert np.abs(int8_scores - torch_scores).max() <= INT8_SCORE_TOLERANCE
    assert np.abs(int8_scores - torch_scores).max() > FP32_SCORE_TOLERANCE  # int8 did change the arithmetic

    clear = np.abs(torch_scores - threshold) > INT8_SCORE_TOLERANCE  # scores int8 cannot carry across
    assert clear.mean() > 0.5, "too few scores away from the threshold for the test to mean anything"
    np.testing.assert_array_equal((int8_scores >= threshold)[clear], (torch_scores >= threshold)[clear])
    # a text's flip can only differ if its original or one of its variants sits within the tolerance
    n = len(TEXTS)
    texts_in_band = np.zeros(n, dtype=bool)
    texts_in_band |= ~clear[:n]
    for detail, start in zip(torch_result.attributes.values(),
                             np.cumsum([n] + [d.variant_score.shape[0] for d in torch_result.attributes.values()])):
        np.logical_or.at(texts_in_band, detail.text_index, ~clear[start : start + detail.variant_score.shape[0]])
    np.testing.assert_array_equal(int8_result.flipped[~texts_in_band], torch_result.flipped[~texts_in_band])
    assert (~texts_in_band).sum() > 0


def test_an_unknown_cpu_runtime_is_one_line_before_any_model_loads(tmp_path):
    with pytest.raises(CpuRuntimeError) as caught:
        CounterfactualScorer(tmp_path / "no-model-here", device="cpu", cpu_runtime="tensorrt")
    message = str(caught.value)
    assert "\n" not in message and "'tensorrt'" in message and "torch, onnx, onnx-int8" in message


def test_an_onnx_runtime_on_a_gpu_device_is_refused():
    with pytest.raises(CpuRuntimeError, match="runs on the CPU only, not on 'cuda'"):
        check_cpu_runtime("onnx-int8", "cuda")
    check_cpu_runtime("torch", "cuda")  # the torch path runs anywhere


def test_a_missing_onnxruntime_is_one_line_naming_the_extra(tiny_model_dirs, monkeypatch):
    # None in sys.modules is how Python itself spells "this module cannot be imported"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CpuRuntimeError) as caught:
        CounterfactualScorer(tiny_model_dirs["random"], device="cpu", cpu_runtime="onnx")
    assert "\n" not in str(caught.value) and "pip install 'fairwatch[onnx]'" in str(caught.value)


def write_texts_csv(tmp_path) -> str:
    path = tmp_path / "texts.csv"
    path.write_text("text\n" + "\n".join(TEXTS[:20]) + "\n")
    return str(path)


def test_fairwatch_score_runs_on_onnx_int8_with_the_torch_scores_within_tolerance(unit_gain_model, tmp_path):
    from helpers import run_cli

    result = run_cli("score", write_texts_csv(tmp_path), "--model-dir", unit_gain_model, "--device", "cpu",
                     "--cpu-runtime", "onnx-int8")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    torch_scores = CounterfactualScorer(unit_gain_model, device="cpu").score(TEXTS[:20]).original_score
    assert [r["row"] for r in rows] == list(range(1, 21))
    assert np.abs(np.array([r["score"] for r in rows]) - torch_scores).max() <= INT8_SCORE_TOLERANCE


@pytest.mark.parametrize("args, message", [
    (["score", "{csv}", "--model-dir", "{model}", "--device", "cpu", "--cpu-runtime", "int4"],
     "unknown CPU runtime 'int4': choose one of torch, onnx, onnx-int8"),
    (["replay", "{csv}", "--text-col", "text", "--scorer-cpu-runtime", "onnx"], "--scorer-cpu-runtime needs --scorer-model"),
])
def test_a_malformed_cpu_runtime_flag_is_one_line_and_exit_2(args, message, tiny_model_dirs, tmp_path):
    from helpers import run_cli

    csv_path = write_texts_csv(tmp_path)
    result = run_cli(*[a.format(csv=csv_path, model=tiny_model_dirs["random"]) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
