"""The CPU-runtime and BERT-base scorer benchmarks run in their small forms and report what they claim."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


@pytest.mark.slow  # compiles the model (inductor)
def test_scorer_cpu_benchmark_pairs_every_runtime_with_the_torch_baseline(tiny_model_dirs, tmp_path, capsys):
    from benchmarks import scorer_cpu

    out = tmp_path / "cpu.json"
    assert scorer_cpu.main(["--model-dir", str(tiny_model_dirs["random"]), "--n", "12", "--rounds", "2",
                            "--json-out", str(out)]) == 0
    runtimes = json.loads(out.read_text())["runtimes"]
    assert list(runtimes) == ["torch", "torch-compile", "torch-int8", "onnx", "onnx-int8"]
    assert all(len(v["sequences_per_s"]) == 2 and min(v["sequences_per_s"]) > 0 for v in runtimes.values())
    assert runtimes["torch"]["paired_ratio_to_torch_median"] == 1.0
    assert runtimes["torch-compile"]["compiled"] is True and runtimes["torch-compile"]["compiled_shapes"] > 0
    for same_arithmetic in ("torch-compile", "onnx"):
        assert runtimes[same_arithmetic]["max_abs_score_change"] < 1e-5, same_arithmetic
        assert runtimes[same_arithmetic]["decisions_kept"] == 1.0, same_arithmetic
    assert runtimes["onnx-int8"]["max_abs_score_change"] > 1e-5  # int8 arithmetic, not the fp32 graph again
    assert "onnx-int8" in capsys.readouterr().out.split("summary")[1]


def test_scorer_cpu_benchmark_refuses_a_run_without_its_baseline(capsys):
    from benchmarks import scorer_cpu

    with pytest.raises(SystemExit) as exit_info:
        scorer_cpu.main(["--model-dir", "unused", "--runtimes", "onnx-int8"])
    assert exit_info.value.code == 2 and "must include torch" in capsys.readouterr().err


def test_bert_base_benchmark_quick_form_reports_rates_beside_the_gemm_rate(tiny_model_dirs, tmp_path):
    from benchmarks import scorer_bert_base

    out = tmp_path / "bert.json"
    assert scorer_bert_base.main(["--quick", "--device", "cpu", "--tokenizer-dir", str(tiny_model_dirs["random"]),
                                  "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["gemm"]["tflops"] > 0 and report["gemm"]["dtype"] == "torch.float32"
    assert [entry["tokens"] for entry in report["lengths"]] == [16, 32]
    for entry in report["lengths"]:
        for part in ("model_only", "sequence_scorer"):
            assert entry[part]["sequences_per_s"] > 0 and 0 < entry[part]["useful_share_of_gemm"]
        assert entry["end_to_end"]["sequences"] > entry["end_to_end"]["texts"]  # variants were scored too


def test_useful_flops_count_linear_weights_per_token_and_attention_per_token_pair():
    import torch

    from benchmarks.scorer_bert_base import build_model, useful_flops_per_sequence

    model = build_model(torch.device("cpu"), torch.float32, quick=True, vocab_size=100)
    hidden, layers, ffn = 64, 2, 128  # QUICK_CONFIG
    per_layer_linear = 4 * hidden * hidden + 2 * hidden * ffn
    head = hidden * hidden + 2 * hidden
    tokens = 10
    expected = 2 * layers * per_layer_linear * tokens + 4 * tokens**2 * hidden * layers + 2 * head
    assert useful_flops_per_sequence(model, tokens) == expected


@pytest.mark.slow  # compiles the model (inductor)
def test_gpu_scorer_benchmark_runs_its_cpu_path_and_reports_every_part(tiny_model_dirs, tmp_path):
    from benchmarks import scorer

    out = tmp_path / "scorer.json"
    assert scorer.main(["--model-dir", str(tiny_model_dirs["random"]), "--device", "cpu", "--n", "40",
                        "--pipeline-n", "10", "--per-text-n", "3", "--model-only-iters", "1", "--batch", "64",
                        "--compile", "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    for part in ("ours", "host", "pipeline", "per_text", "device_path", "model_only", "model_only_16",
                 "model_only_16_no_mask", "model_only_16_wide"):
        assert report[part]["sequences_per_s"] > 0, part
    assert report["ours"]["sequences"] == report["device_path"]["sequences"] > report["ours"]["texts"] == 40
    assert report["ours"]["mask_form"] == "4d" and report["ours"]["max_batch"] == 64
    assert report["model_only_16_wide"]["batch"] == 4 * report["model_only_16"]["batch"]
    compiled = report["ours_compiled"]  # the part a GPU run measures: here inductor's CPU kernels
    assert compiled["compile_disabled"] is None and compiled["compiled_shapes"] > 0
    assert 0 <= compiled["compile_largest_difference"] <= compiled["compile_tolerance"] == 1e-4
    assert compiled["sequences"] == report["ours"]["sequences"] and compiled["sequences_per_s"] > 0
    assert report["compiled_16"]["max_abs_logit_difference"] < 1e-4
