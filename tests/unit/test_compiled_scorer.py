"""The scorer under torch.compile: the eager model's scores, few shapes, and eager again whenever compiling fails or
disagrees (CPU: inductor's C++ kernels on a tiny real BERT; CUDA graphs need a GPU, docs/scorer.md)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fairwatch.monitor.scorer.batching import SequenceScorer  # noqa: E402
from fairwatch.monitor.scorer.compiled import SMALLEST_BUCKET, row_bucket, row_pieces  # noqa: E402
from fairwatch.monitor.scorer.cpu_runtime import CpuRuntimeError  # noqa: E402
from fairwatch.monitor.scorer.model import load_classifier  # noqa: E402
from fairwatch.monitor.scorer.scoring import CounterfactualScorer  # noqa: E402


def _rows(n: int = 150, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[2, *rng.integers(5, 60, size=int(rng.integers(1, 30))).tolist(), 3] for _ in range(n)]


def test_row_pieces_cover_every_row_and_pad_little() -> None:
    for rows in [*range(1, 3000), 4095, 4096, 4097, 17000, 32767, 32768]:
        pieces = row_pieces(rows)
        assert sum(pieces) == rows and all(p > 0 for p in pieces), rows
        assert all(p >= SMALLEST_BUCKET and p & (p - 1) == 0 for p in pieces[:-1]), rows  # each fills its bucket
        last = pieces[-1]
        assert row_bucket(last) - last <= max(last / 8, 63), rows  # the last pads at most 1/8, or is small


@pytest.mark.slow
def test_compiled_scores_are_the_eager_scores(tiny_model_dirs, caplog) -> None:  # noqa: ANN001
    from torch._dynamo.utils import counters

    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    rows = _rows()
    eager = SequenceScorer(loaded, max_batch=64).score(rows)
    torch.compiler.reset()  # no compiled code left from other tests: this one must compile its own
    compiled = SequenceScorer(loaded, max_batch=64, compile=True)
    graphs_before = counters["stats"]["unique_graphs"]
    with caplog.at_level(logging.WARNING, logger="fairwatch.scorer"):
        got = compiled.score(rows)
        again = compiled.score(rows[:37])  # a short last piece: padded up to its bucket, its extra rows dropped
    assert compiled.compiled.active, compiled.compiled.disabled
    assert counters["stats"]["unique_graphs"] > graphs_before  # dynamo compiled the model: not eager under a name
    assert not _scorer_warnings(caplog)
    np.testing.assert_allclose(got, eager, atol=1e-5)
    np.testing.assert_allclose(again, eager[:37], atol=1e-5)
    shapes = compiled.compiled.shapes  # 150 rows as 64 + 64 + 22 (run as 32), then 37 (run as 64)
    assert {rows for (rows, _width), _mask in shapes} == {32, 64}
    assert len({width for (_rows, width), _mask in shapes}) >= 2


def _scorer_warnings(caplog) -> list[str]:  # noqa: ANN001 - torch's own warnings are not ours to count
    return [r.getMessage() for r in caplog.records if r.name == "fairwatch.scorer"]


class _Shifted(torch.nn.Module):
    """What a miscompiled model would return: the logits moved."""

    def __init__(self, model, shift: float) -> None:  # noqa: ANN001
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, **inputs):  # noqa: ANN003, ANN201
        out = self.model(**inputs)
        out.logits = out.logits + torch.tensor([0.0, self.shift])
        return out


def _failing_at_first_call(model, **_options):  # noqa: ANN001, ANN202 - torch.compile compiles at the first call
    def call(**_inputs):  # noqa: ANN003, ANN202
        raise RuntimeError("InductorError: no working C++ compiler found\nsecond line")
    return call


def _refusing(model, **_options):  # noqa: ANN001, ANN202
    raise RuntimeError("this model cannot be traced")


class _FailingOnSecondCall:
    """Compiles fine, then fails when a shape is run again (as an out-of-memory while recording a CUDA graph)."""

    def __init__(self, model, **_options) -> None:  # noqa: ANN001
        self.model, self.seen = model, set()

    def __call__(self, **inputs):  # noqa: ANN003, ANN204
        shape = tuple(inputs["input_ids"].shape)
        if shape in self.seen:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
        self.seen.add(shape)
        return self.model(**inputs)


@pytest.mark.parametrize("compiler, why", [
    (lambda model, **_: _Shifted(model, 0.5), "compiled scores differ from eager by"),
    (lambda model, **_: _Shifted(model, float("nan")), "compiled scores differ from eager by nan"),
    (_failing_at_first_call, "failed (RuntimeError: InductorError: no working C++ compiler found)"),
    (_refusing, "torch.compile refused the model (this model cannot be traced)"),
    (_FailingOnSecondCall, "running 64 rows x 16 tokens (4-D mask) failed (OutOfMemoryError: CUDA out of memory."),
])
def test_a_compiled_model_that_fails_or_disagrees_leaves_the_eager_scores(tiny_model_dirs, monkeypatch, caplog,
                                                                          compiler, why) -> None:  # noqa: ANN001
    monkeypatch.setattr(torch, "compile", compiler)
    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    rows = _rows()
    eager = SequenceScorer(loaded, max_batch=64).score(rows)
    with caplog.at_level(logging.WARNING, logger="fairwatch.scorer"):
        sequences = SequenceScorer(loaded, max_batch=64, compile=True)
        got = sequences.score(rows)
        again = sequences.score(rows)
    np.testing.assert_allclose(got, eager, atol=1e-6)
    np.testing.assert_allclose(again, eager, atol=1e-6)
    assert not sequences.compiled.active and why in sequences.compiled.disabled
    warnings = _scorer_warnings(caplog)
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings  # one line, once
    assert warnings[0].startswith("scorer: torch.compile off, scoring eagerly from now on: ") and why in warnings[0]


def test_compile_with_an_onnx_runtime_is_refused_before_any_model_loads(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(CpuRuntimeError, match="compile applies to the torch runtime, not to 'onnx-int8'"):
        CounterfactualScorer(tmp_path / "no-such-model", device="cpu", cpu_runtime="onnx-int8", compile=True)


@pytest.mark.parametrize("args, message", [
    (["score", "{csv}", "--model-dir", "{model}", "--device", "cpu", "--cpu-runtime", "onnx", "--compile"],
     "compile applies to the torch runtime, not to 'onnx': drop one of them"),
    (["replay", "{csv}", "--text-col", "text", "--scorer-compile"], "--scorer-compile needs --scorer-model"),
])
def test_a_conflicting_compile_flag_is_one_line_and_exit_2(args, message, tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    from helpers import run_cli

    csv_path = tmp_path / "texts.csv"
    csv_path.write_text("text\nmy son is kind.\nher daughter said hello.\n")
    result = run_cli(*[a.format(csv=csv_path, model=tiny_model_dirs["random"]) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


class _Counting(torch.nn.Module):
    def __init__(self, model) -> None:  # noqa: ANN001
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, **inputs):  # noqa: ANN003, ANN201
        self.calls += 1
        return self.model(**inputs)


def test_on_cuda_a_new_shape_is_checked_on_its_recorded_graph_per_thread(tiny_model_dirs, monkeypatch) -> None:  # noqa: ANN001
    """The CUDA branch's bookkeeping, on CPU: warm-up call, recorded call, eager check; then replays only."""
    import threading

    from fairwatch.monitor.scorer.compiled import CompiledClassifier
    from fairwatch.monitor.scorer.model import positive_scores

    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    compiled_model, eager_model = _Counting(loaded.model), _Counting(loaded.model)
    monkeypatch.setattr(torch, "compile", lambda model, **_: compiled_model)
    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    classifier = CompiledClassifier(eager_model, "cuda", positive_scores, tolerance=1e-6)
    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.inference_mode():
        first = classifier.logits(ids, mask)
        assert (compiled_model.calls, eager_model.calls, len(steps)) == (2, 1, 2)  # warm-up, recorded; checked
        second = classifier.logits(ids, mask)
        assert (compiled_model.calls, eager_model.calls, len(steps)) == (3, 1, 3)  # replayed only
        other_thread = threading.Thread(target=classifier.logits, args=(ids, mask))
        other_thread.start()
        other_thread.join()
    assert (compiled_model.calls, eager_model.calls) == (5, 2)  # graphs are per thread: checked there again
    assert classifier.shapes == {((2, 4), ((2, 4), torch.int64))} and classifier.active
    torch.testing.assert_close(first, second)
    assert first.data_ptr() != second.data_ptr()  # each a copy, not the graph's own output memory


def test_past_max_shapes_new_shapes_run_eager_and_compile_stays_on(tiny_model_dirs, monkeypatch) -> None:  # noqa: ANN001
    from fairwatch.monitor.scorer.compiled import CompiledClassifier
    from fairwatch.monitor.scorer.model import positive_scores

    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    compiled_model = _Counting(loaded.model)
    monkeypatch.setattr(torch, "compile", lambda model, **_: compiled_model)
    classifier = CompiledClassifier(loaded.model, "cpu", positive_scores, tolerance=1e-6, max_shapes=2)
    with torch.inference_mode():
        for width in (4, 8, 12, 8):
            classifier.logits(torch.full((2, width), 7), None)
    assert compiled_model.calls == 3 and classifier.active  # widths 4 and 8 (twice) compiled; 12 eager
    assert {width for (_rows, width), _mask in classifier.shapes} == {4, 8}
