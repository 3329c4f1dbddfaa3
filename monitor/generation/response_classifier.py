"""A response classifier the user supplies: any local Hugging Face sequence-classification directory
(toxicity, sentiment, regard) scoring LLM responses, batched on the GPU or the CPU by the scorer's
``SequenceScorer`` (length-bucketed padding, pinned copies on CUDA).

A response is *toxic* (the word stands for whatever the chosen label means: toxic, negative, negative
regard) when the probability of ``label`` is at least ``threshold``. The probability is a softmax over
the labels, or a sigmoid of the label's logit for a multi-label model (``problem_type`` is
``multi_label_classification``, as toxicity models with several harm labels are) or a one-logit model.
``label``: a name of the model's ``id2label`` (any case) or an index; default the last label, the
scorer's positive class. Nothing is downloaded: the directory must hold the model and a fast tokenizer.
torch and transformers (the ``ml`` extra) are imported only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ResponseClassifier", "label_column"]

# Characters kept before tokenizing: a response is cut to its first max_length tokens anyway, and
# tokenizing 20,000 characters to keep 256 tokens would cost more than the model.
CHARS_PER_TOKEN_KEPT = 8


def label_column(config: Any, label: str | int | None) -> tuple[int, str, bool]:
    """(column, label name, multi-label?) of ``label`` in a transformers model ``config``; a bad label raises
    ValueError naming the model's labels."""
    n = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if label is None:
        index = n - 1
    elif isinstance(label, int) or str(label).isdigit():
        index = int(label)
        if not 0 <= index < n:
            raise ValueError(f"label index {index} is outside the model's {n} labels")
    else:
        matches = [i for i, name in id2label.items() if name.lower() == str(label).lower()]
        if not matches:
            shown = ", ".join(f"{i}={name}" for i, name in sorted(id2label.items()))
            raise ValueError(f"label {label!r} is not one of the model's labels ({shown})")
        index = matches[0]
    multi = n == 1 or getattr(config, "problem_type", None) == "multi_label_classification"
    return index, id2label.get(index, str(index)), multi


class _LabelProbability:
    """Logits -> the chosen label's probability, fp32 (what SequenceScorer calls per batch)."""

    def __init__(self, index: int, multi_label: bool) -> None:
        self.index = index
        self.multi_label = multi_label

    def __call__(self, logits):
        logits = logits.float()
        if self.multi_label:
            return logits[..., self.index].sigmoid()
        return logits.softmax(dim=-1)[..., self.index]


class ResponseClassifier:
    """``flags(responses)``: 1.0 where the label's probability is at least ``threshold``, else 0.0;
    ``scores(responses)``: the probabilities. ``device``: "cpu", "cuda", "cuda:N" (default: CUDA when
    available); ``max_length``: tokens read per response; ``max_batch``: responses per forward pass."""

    def __init__(self, model_dir: str | Path | None = None, *, label: str | int | None = None,
                 threshold: float = 0.5, device: str | None = None, max_length: int = 256, max_batch: int = 256,
                 dtype: Any = None, loaded: Any = None) -> None:
        from fairwatch.monitor.scorer.batching import SequenceScorer
        from fairwatch.monitor.scorer.model import load_classifier

        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"the response threshold must be between 0 and 1, got {threshold}")
        if loaded is None:
            if model_dir is None:
                raise ValueError("give model_dir or loaded")
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a worker's stderr gets its own lines, not load bars
            loaded = load_classifier(model_dir, device=device, dtype=dtype)
        self.loaded = loaded
        self.index, self.label, multi_label = label_column(loaded.model.config, label)
        self.threshold = float(threshold)
        self.max_length = int(max_length)
        self.sequences = SequenceScorer(loaded, max_batch=max_batch, max_tokens=max_batch * self.max_length,
                                        score_fn=_LabelProbability(self.index, multi_label))

    @property
    def device(self) -> str:
        return str(self.loaded.device)

    def scores(self, responses: Sequence[str]) -> np.ndarray:
        if len(responses) == 0:
            return np.zeros(0, dtype=np.float32)
        cut = self.max_length * CHARS_PER_TOKEN_KEPT
        ids = self.loaded.tokenizer([r[:cut] for r in responses], truncation=True, max_length=self.max_length,
                                    add_special_tokens=True)["input_ids"]
        return self.sequences.score(ids)

    def flags(self, responses: Sequence[str]) -> np.ndarray:
        return (self.scores(responses) >= self.threshold).astype(np.float64)
