"""CounterfactualScorer: score texts and their counterfactual variants, return debiased outputs.

Usage (a model directory is needed, so this is not run as a doctest)::

    scorer = CounterfactualScorer("path/to/model", Lexicon.default())
    result = scorer.score(["my son is gay", "hello"])
    result.original_score, result.debiased_score, result.flipped
"""
from __future__ import annotations

from collections import deque
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from fairwatch.monitor.scorer.batching import MAX_ROWS, DynamicBatcher, PendingScores, SequenceScorer
from fairwatch.monitor.scorer.counterfactuals import Lexicon
from fairwatch.monitor.scorer.cpu_runtime import CpuRuntimeError, check_cpu_runtime, runtime_model
from fairwatch.monitor.scorer.debias import counterfactual_average
from fairwatch.monitor.scorer.model import LoadedClassifier, load_classifier
from fairwatch.monitor.scorer.results import AttributeDetail, CounterfactualBatchResult
from fairwatch.monitor.scorer.prepare import HostPreparer, PreparedRows, default_workers

__all__ = ["CounterfactualScorer", "CounterfactualBatchResult"]

MAX_TEXT_CHARS = 100_000  # longer inputs are rejected, not truncated silently by a regex scan


class CounterfactualScorer:
    """Re-score texts with a Hugging Face classifier, as written and with group terms swapped.

    ``threshold`` turns scores into decisions (flip = decision changes on some
    variant). ``max_length`` truncates token sequences (special tokens included).
    ``splice=False`` re-tokenizes every variant instead of splicing token ids.
    ``workers``: processes that build variants (None: all cores but one on
    CUDA, none on CPU; 0: in-process); results do not depend on it beyond float
    rounding (a batch too small to fill every worker is chunked, hence batched, more finely).
    ``chunk_texts``: texts per unit of host work and of device launches.
    ``cpu_runtime``: "torch" (the model as loaded), "onnx" (ONNX Runtime, same
    scores within float rounding) or "onnx-int8" (int8 weights: faster on CPU,
    scores move slightly); see :mod:`monitor.scorer.cpu_runtime`.
    ``compile``: run the torch model under ``torch.compile`` (CUDA graphs on a GPU), each new batch shape
    checked against the eager model before its scores are used; see :mod:`monitor.scorer.compiled`.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        lexicon: Lexicon | str | Path | None = None,
        device: str | None = None,
        threshold: float = 0.5,
        max_length: int = 64,
        max_batch: int | None = None,
        dtype: Any = None,
        splice: bool = True,
        loaded: LoadedClassifier | None = None,
        workers: int | None = None,
        chunk_texts: int = 2048,
        cpu_runtime: str = "torch",
        compile: bool = False,
    ) -> None:
        check_cpu_runtime(cpu_runtime)  # a misspelt runtime fails before a model is loaded
        if compile and cpu_runtime != "torch":
            raise CpuRuntimeError(f"compile applies to the torch runtime, not to {cpu_runtime!r}: drop one of them")
        if loaded is None:
            if model_dir is None:
                raise ValueError("give model_dir or loaded")
            loaded = load_classifier(model_dir, device=device, dtype=dtype)
        if lexicon is None:
            lexicon = Lexicon.default()
        elif not isinstance(lexicon, Lexicon):
            lexicon = Lexicon.from_file(lexicon)
        self.loaded = loaded
        self.lexicon = lexicon
        self.threshold = float(threshold)
        if workers is None:
            workers = default_workers(loaded.device.type)
        self.preparer = HostPreparer(
            loaded.tokenizer, lexicon, max_length=max_length, splice=splice, workers=workers, chunk_texts=chunk_texts
        )
        self.generator = self.preparer.local.generator
        self.tokens = self.preparer.local.tokens
        self.cpu_runtime = cpu_runtime
        # the token budget: the row cap (the CPU's when unset) at full length
        self.sequences = SequenceScorer(loaded, max_batch=max_batch,
                                        max_tokens=(max_batch or MAX_ROWS["cpu"]) * max_length,
                                        model=runtime_model(loaded, cpu_runtime), compile=compile)
        self.spliced = 0  # variants built by token-id splicing
        self.retokenized = 0  # variants that needed a tokenizer pass

    @property
    def device(self) -> Any:
        return self.loaded.device

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Scores of the texts as written, no variants."""
        encs = self.tokens.encode(list(texts))
        return self.sequences.score([self.tokens.truncate(e.ids) for e in encs])

    def score(self, texts: Sequence[Any]) -> CounterfactualBatchResult:
        """Score each text and all its variants; bad rows (not a non-empty string) get NaN and a reason."""
        return next(self.score_stream([texts]))

    def score_stream(self, batches: Iterable[Sequence[Any]], lookahead: int = 1) -> Iterator[CounterfactualBatchResult]:
        """:meth:`score` of each batch in turn, preparing ``lookahead`` batches ahead.

        With worker processes, batch k+1 is tokenized and expanded into
        variants while the device scores batch k; within a batch, the device
        starts on each chunk as soon as a worker returns it. Batch k's result
        is assembled and yielded once batch k+1 is queued on the device, so the
        device is not idle while the host assembles.
        """
        source = iter(batches)
        pending: deque[tuple[int, list[int], dict[int, str], list[Any]]] = deque()

        def submit() -> None:
            texts = next(source, None)
            if texts is None:
                return
            valid, rejected = self._validate(texts)
            pending.append((len(texts), valid, rejected, self.preparer.submit([texts[i] for i in valid])))

        for _ in range(1 + max(0, lookahead)):
            submit()
        queued: Callable[[], CounterfactualBatchResult] | None = None  # the batch on the device, to assemble
        while pending:
            n, valid, rejected, futures = pending.popleft()
            parts: list[PreparedRows] = []
            launches = []
            try:
                for future in futures:
                    rows = future.result()
                    parts.append(rows)
                    launches.append(self.sequences.launch(rows.ids, rows.lengths))
                submit()  # keep the pool busy while this batch finishes on the device
                scores = self.sequences.fetch(launches, [p.n_rows for p in parts])
            except Exception:
                if queued is not None:  # the batch before is done: deliver it, then the error
                    done, queued = queued, None
                    yield done()
                raise
            if queued is not None:
                yield queued()
            queued = partial(self._assemble, n, np.asarray(valid, dtype=np.int64), rejected, parts, scores)
        if queued is not None:
            yield queued()

    @staticmethod
    def _validate(texts: Sequence[Any]) -> tuple[list[int], dict[int, str]]:
        rejected: dict[int, str] = {}
        valid: list[int] = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                rejected[i] = f"text is {type(t).__name__}, not a string"
            elif not t.strip():
                rejected[i] = "empty text"
            elif len(t) > MAX_TEXT_CHARS:
                rejected[i] = f"text longer than {MAX_TEXT_CHARS} characters"
            else:
                valid.append(i)
        return valid, rejected

    def _assemble(
        self,
        n: int,
        valid: np.ndarray,
        rejected: dict[int, str],
        parts: list[PreparedRows],
        pending_scores: PendingScores,
    ) -> CounterfactualBatchResult:
        """Join the chunks' rows and scores (waited for here) into one result, all with array operations."""
        scores = pending_scores.wait()
        text_offsets = np.cumsum([0] + [p.n_texts for p in parts])
        variant_offsets = np.cumsum([0] + [p.n_variants for p in parts])
        empty_f = np.zeros(0, dtype=np.float32)
        empty_i = np.zeros(0, dtype=np.int64)
        original_valid = np.concatenate([s[: p.n_texts] for p, s in zip(parts, scores)] or [empty_f])
        v_score = np.concatenate([s[p.n_texts :] for p, s in zip(parts, scores)] or [empty_f])
        v_local = np.concatenate([p.variant_text.astype(np.int64) + o for p, o in zip(parts, text_offsets)] or [empty_i])
        v_text = valid[v_local] if v_local.size else empty_i
        v_attr = np.concatenate([p.variant_attribute for p in parts] or [empty_i]).astype(np.int64)
        swap_variant = np.concatenate(
            [p.swap_variant.astype(np.int64) + o for p, o in zip(parts, variant_offsets)] or [empty_i]
        )
        swap_source = np.concatenate([p.swap_source for p in parts] or [empty_i]).astype(np.int16)
        swap_target = np.concatenate([p.swap_target for p in parts] or [empty_i]).astype(np.int16)
        self.spliced += sum(p.spliced for p in parts)
        self.retokenized += sum(p.retokenized for p in parts)

        original = np.full(n, np.nan, dtype=np.float32)
        original[valid] = original_valid
        delta = (v_score - original[v_text]).astype(np.float32)
        abs_delta = np.abs(delta)
        max_abs = np.zeros(n, dtype=np.float32)
        np.maximum.at(max_abs, v_text, abs_delta)
        decision = original >= self.threshold
        v_flip = (v_score >= self.threshold) != decision[v_text]
        flipped = np.zeros(n, dtype=bool)
        flipped[v_text[v_flip]] = True
        n_variants = np.bincount(v_text, minlength=n).astype(np.int64)
        debiased = counterfactual_average(original, v_score, v_text).astype(np.float32)
        max_abs[np.isnan(original)] = np.nan

        # swaps of variant k: swap_start[k] : swap_start[k] + swap_count[k] (variants and swaps are in order)
        swap_count = np.bincount(swap_variant, minlength=v_score.shape[0]).astype(np.int64)
        swap_start = np.cumsum(swap_count) - swap_count
        attributes: dict[str, AttributeDetail] = {}
        names = self.preparer.local.attributes
        for code in np.unique(v_attr).tolist():
            sel = np.flatnonzero(v_attr == code)
            counts = swap_count[sel]
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            gather = np.repeat(swap_start[sel] - offsets[:-1], counts) + np.arange(int(offsets[-1]))
            attributes[names[code]] = AttributeDetail(
                names[code], v_text[sel], v_score[sel], delta[sel],
                offsets, swap_source[gather], swap_target[gather], self.preparer.local.terms,
            )
        # report attributes in lexicon order, as before
        attributes = {a: attributes[a] for a in names if a in attributes}
        return CounterfactualBatchResult(
            original_score=original,
            debiased_score=debiased,
            flipped=flipped,
            max_abs_change=max_abs,
            n_variants=n_variants,
            threshold=self.threshold,
            attributes=attributes,
            rejected=rejected,
        )

    def close(self) -> None:
        """Stop the worker processes, if any."""
        self.preparer.close()

    def batcher(self, max_batch: int = 1024, max_wait_ms: float = 10.0) -> DynamicBatcher:
        """A DynamicBatcher whose futures yield, per text, a dict of its scores and flip."""

        def run(texts: list[Any]) -> list[dict[str, Any]]:
            r = self.score(texts)
            return [
                {
                    "score": float(r.original_score[i]),
                    "debiased_score": float(r.debiased_score[i]),
                    "flipped": bool(r.flipped[i]),
                    "max_abs_change": float(r.max_abs_change[i]),
                    "n_variants": int(r.n_variants[i]),
                    "rejected": r.rejected.get(i),
                }
                for i in range(len(texts))
            ]

        return DynamicBatcher(run, max_batch=max_batch, max_wait_ms=max_wait_ms)
