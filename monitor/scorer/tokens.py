"""Tokenize once, then build counterfactual variants by splicing token ids.

For tokenizers that split words on whitespace and punctuation before a
per-word model (BERT's WordPiece, WordLevel), a word's tokens do not depend on
its neighbours, so the ids of "my daughter's" are the ids of "my son's" with the
ids of "son" replaced by those of "daughter" -- whatever the token counts. That
saves a tokenizer pass per variant. Other tokenizers (byte-level BPE,
SentencePiece) re-tokenize the variant text instead, in one parallel batch.
"""
from __future__ import annotations

import bisect
import json
from typing import Any, Sequence

from fairwatch.monitor.scorer.counterfactuals import Swap

__all__ = ["VariantTokenizer"]

_SPLICE_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_SPLICE_MODELS = {"WordPiece", "WordLevel"}


class VariantTokenizer:
    """Token ids of texts and of their variants, truncated to ``max_length``.

    ``tokenizer``: a transformers fast tokenizer, a ``tokenizers.Tokenizer``, or
    the JSON text of one (what a worker process receives).
    """

    def __init__(self, tokenizer: Any, max_length: int = 64, splice: bool = True) -> None:
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, str):
            tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer).to_str()
        # A private copy: tokenizer.json may carry fixed padding/truncation (MiniLM's pads to 128).
        backend = Tokenizer.from_str(tokenizer)
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.max_length = max_length
        spec = json.loads(backend.to_str())
        pre = (spec.get("pre_tokenizer") or {}).get("type")
        model = (spec.get("model") or {}).get("type")
        self.splice = bool(splice and pre in _SPLICE_PRE_TOKENIZERS and model in _SPLICE_MODELS)
        with_special = backend.encode("a").ids
        bare = backend.encode("a", add_special_tokens=False).ids
        pos = _find(with_special, bare)
        self.n_prefix = pos
        self.n_suffix = len(with_special) - pos - len(bare)
        self._word_ids: dict[str, list[int]] = {}

    def encode(self, texts: Sequence[str]) -> list[Any]:
        """``tokenizers.Encoding`` of each text; the Rust batch call runs on all cores without the GIL."""
        return self.backend.encode_batch(list(texts))

    def truncate(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_length:
            return ids
        keep = self.max_length - self.n_prefix - self.n_suffix
        tail = ids[len(ids) - self.n_suffix :] if self.n_suffix else []
        return ids[: self.n_prefix + keep] + tail

    def word_ids(self, surface: str) -> list[int]:
        ids = self._word_ids.get(surface)
        if ids is None:
            ids = self._word_ids[surface] = self.backend.encode(surface, add_special_tokens=False).ids
        return ids

    def splice_ids(self, encoding: Any, swaps: Sequence[Swap]) -> list[int] | None:
        """Untruncated ids of the variant, or None when the swap does not fall on token boundaries."""
        if not self.splice:
            return None
        ids = encoding.ids
        offsets = encoding.offsets
        body_end = len(ids) - self.n_suffix
        starts = [o[0] for o in offsets[self.n_prefix : body_end]]
        out: list[int] = []
        pos = self.n_prefix
        out.extend(ids[:pos])
        for sw in swaps:
            a = self.n_prefix + bisect.bisect_left(starts, sw.start)
            b = a
            while b < body_end and offsets[b][1] <= sw.end:
                b += 1
            if a >= b or offsets[a][0] != sw.start or offsets[b - 1][1] != sw.end or a < pos:
                return None
            out.extend(ids[pos:a])
            out.extend(self.word_ids(sw.replacement))
            pos = b
        out.extend(ids[pos:])
        return out


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return 0
