"""SequenceScorer's attention masks: prepared 4-D masks where the model takes them, the given 2-D mask
elsewhere, and the model's own scores either way (CPU, tiny real BERT)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fairwatch.monitor.scorer.batching import SequenceScorer  # noqa: E402
from fairwatch.monitor.scorer.model import load_classifier  # noqa: E402


def _rows(n: int = 40, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[2, *rng.integers(5, 60, size=int(rng.integers(1, 20))).tolist(), 3] for _ in range(n)]


def _one_at_a_time(model, rows) -> np.ndarray:  # noqa: ANN001 - each row unpadded: no mask involved
    with torch.inference_mode():
        return np.array([float(model(input_ids=torch.tensor([r])).logits.softmax(-1)[0, -1]) for r in rows])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_prepared_masks_give_the_scores_of_unpadded_rows(tiny_model_dirs, attention: str) -> None:  # noqa: ANN001
    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    loaded.model.set_attn_implementation(attention)
    rows = _rows()
    sequences = SequenceScorer(loaded, max_batch=8)
    assert sequences.mask_form is None  # decided on the first padded batch
    got = sequences.score(rows)
    assert sequences.mask_form == "4d"
    np.testing.assert_allclose(got, _one_at_a_time(loaded.model, rows), atol=1e-5)


class _TwoDimensionalOnly(torch.nn.Module):
    """A classifier that claims SDPA but, like some architectures, misreads a 4-D mask: it attends to padding."""

    def __init__(self, model) -> None:  # noqa: ANN001
        super().__init__()
        self.inner = model
        self.config = model.config
        self.dtype = model.dtype

    def forward(self, input_ids, attention_mask=None):  # noqa: ANN001, ANN201
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_a_model_that_misreads_prepared_masks_keeps_the_2d_mask(tiny_model_dirs) -> None:  # noqa: ANN001
    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    wrapped = _TwoDimensionalOnly(loaded.model)
    rows = _rows(seed=1)
    sequences = SequenceScorer(loaded, max_batch=8, model=wrapped)
    got = sequences.score(rows)
    assert sequences.mask_form == "2d"
    np.testing.assert_allclose(got, _one_at_a_time(loaded.model, rows), atol=1e-5)


def test_unpadded_batches_need_no_decision(tiny_model_dirs) -> None:  # noqa: ANN001
    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    rows = [[2, *range(k, k + 6), 3] for k in (7, 20, 40)]  # 8 tokens: widths are multiples of 8
    sequences = SequenceScorer(loaded)
    got = sequences.score(rows)
    assert sequences.mask_form is None
    np.testing.assert_allclose(got, _one_at_a_time(loaded.model, rows), atol=1e-5)
