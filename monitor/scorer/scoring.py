"""CounterfactualScorer: score texts and their counterfactual variants, return debiased outputs.

Usage (a model directory is needed, so this is not run as a doctest)::

    scorer = CounterfactualScorer("path/to/model", Lexicon.default())
    result = scorer.score(["my son is gay", "hello"])
    result.original_score, result.debiased_score, result.flipped
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from monitor.scorer.batching import DynamicBatcher, SequenceScorer
from monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon, Variant
from monitor.scorer.debias import counterfactual_average
from monitor.scorer.model import LoadedClassifier, load_classifier
from monitor.scorer.results import AttributeDetail, CounterfactualBatchResult
from monitor.scorer.tokens import VariantTokenizer

__all__ = ["CounterfactualScorer", "CounterfactualBatchResult"]

MAX_TEXT_CHARS = 100_000  # longer inputs are rejected, not truncated silently by a regex scan


class CounterfactualScorer:
    """Re-score texts with a Hugging Face classifier, as written and with group terms swapped.

    ``threshold`` turns scores into decisions (flip = decision changes on some
    variant). ``max_length`` truncates token sequences (special tokens included).
    ``splice=False`` re-tokenizes every variant instead of splicing token ids.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        lexicon: Lexicon | str | Path | None = None,
        device: str | None = None,
        threshold: float = 0.5,
        max_length: int = 64,
        max_batch: int = 4096,
        dtype: Any = None,
        splice: bool = True,
        loaded: LoadedClassifier | None = None,
    ) -> None:
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
        self.generator = CounterfactualGenerator(lexicon)
        self.tokens = VariantTokenizer(loaded.tokenizer, max_length=max_length, splice=splice)
        self.sequences = SequenceScorer(loaded, max_batch=max_batch, max_tokens=max_batch * max_length)
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
        n = len(texts)
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
        valid_texts = [texts[i] for i in valid]
        encodings = self.tokens.encode(valid_texts)

        rows: list[list[int]] = [self.tokens.truncate(e.ids) for e in encodings]
        variant_of: list[int] = []  # batch text index per variant
        variant_list: list[Variant] = []
        pending_text: list[str] = []  # variants that must be re-tokenized
        pending_row: list[int] = []
        for j, (text, enc) in enumerate(zip(valid_texts, encodings)):
            for vs in self.generator.variants(text).values():
                for v in vs:
                    ids = self.tokens.splice_ids(enc, v.swaps)
                    variant_of.append(valid[j])
                    variant_list.append(v)
                    if ids is None:
                        pending_row.append(len(rows))
                        pending_text.append(v.text)
                        rows.append([])
                    else:
                        rows.append(self.tokens.truncate(ids))
        if pending_text:
            for r, e in zip(pending_row, self.tokens.encode(pending_text)):
                rows[r] = self.tokens.truncate(e.ids)
        self.retokenized += len(pending_text)
        self.spliced += len(variant_list) - len(pending_text)

        scores = self.sequences.score(rows)
        original = np.full(n, np.nan, dtype=np.float32)
        original[valid] = scores[: len(valid)]
        v_score = scores[len(valid) :]
        v_text = np.asarray(variant_of, dtype=np.int64)
        return self._assemble(original, v_score, v_text, variant_list, rejected)

    def _assemble(
        self,
        original: np.ndarray,
        v_score: np.ndarray,
        v_text: np.ndarray,
        variants: list[Variant],
        rejected: dict[int, str],
    ) -> CounterfactualBatchResult:
        n = original.shape[0]
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

        attributes: dict[str, AttributeDetail] = {}
        names = np.array([v.attribute for v in variants], dtype=object)
        for name in dict.fromkeys(names.tolist()):
            sel = np.flatnonzero(names == name)
            attributes[name] = AttributeDetail(
                name,
                v_text[sel],
                v_score[sel],
                delta[sel],
                [tuple((s.source, s.target) for s in variants[k].swaps) for k in sel],
            )
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
