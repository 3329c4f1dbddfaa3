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


SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "vocab_size": 100, "max_position_embeddings": 128, "num_labels": 2}
ARCHITECTURES = {  # name: (config, the mask form the check must settle on)
    "roberta": (lambda t: t.RobertaConfig(**SMALL, pad_token_id=1), "4d"),
    "xlm-roberta": (lambda t: t.XLMRobertaConfig(**SMALL, pad_token_id=1), "4d"),
    "electra": (lambda t: t.ElectraConfig(**SMALL, embedding_size=32), "4d"),
    "albert": (lambda t: t.AlbertConfig(**SMALL, embedding_size=16), "4d"),
    "mpnet": (lambda t: t.MPNetConfig(**SMALL), "4d"),  # eager attention: the additive mask
    "distilbert": (lambda t: t.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100,
                                                max_position_embeddings=128, num_labels=2), "4d"),
    # DeBERTa-v2 (eager attention only) reads a 4-D mask as 0/1 to keep, not as the additive mask eager
    # attention takes elsewhere: with the prepared mask its logits are NaN, so the check keeps the 2-D one
    "deberta-v2": (lambda t: t.DebertaV2Config(**SMALL), "2d"),
    # ModernBERT's local layers attend within a sliding window that a prepared mask would switch off: equal
    # scores while rows fit the window (16 tokens here), other scores beyond it, so the 2-D mask comes back
    "modernbert": (lambda t: t.ModernBertConfig(**SMALL, pad_token_id=0, local_attention=16,
                                                global_attn_every_n_layers=2, classifier_pooling="cls"), "2d"),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_gets_the_mask_form_it_reads_and_its_own_scores(name: str) -> None:
    import types

    import transformers

    from fairwatch.monitor.scorer.model import LoadedClassifier

    make_config, expected_form = ARCHITECTURES[name]
    config = make_config(transformers)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # wide weights, so that attending to padding shows in the scores
            if param.dim() >= 2:
                param.normal_(std=0.3)
    tokenizer = types.SimpleNamespace(pad_token_id=getattr(config, "pad_token_id", 0) or 0)
    loaded = LoadedClassifier(model, tokenizer, torch.device("cpu"), torch.float32, 2, name)
    rows = [[2, *r[1:-1], 3] for r in _rows(seed=2)]
    sequences = SequenceScorer(loaded, max_batch=8)
    got = sequences.score(rows)
    assert sequences.mask_form == expected_form
    np.testing.assert_allclose(got, _one_at_a_time(model, rows), atol=1e-5)


class _FourDimensionalUpTo(torch.nn.Module):
    """Reads a prepared 4-D mask right up to ``width`` tokens and ignores it beyond (as a sliding attention
    window does, which a prepared mask switches off): the form must be checked again at each new width."""

    def __init__(self, model, width: int) -> None:  # noqa: ANN001
        super().__init__()
        self.inner, self.width = model, width
        self.config = model.config
        self.dtype = model.dtype

    def forward(self, input_ids, attention_mask=None):  # noqa: ANN001, ANN201
        if attention_mask is not None and attention_mask.dim() == 4 and input_ids.shape[1] > self.width:
            attention_mask = None
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_the_mask_form_is_checked_again_at_each_new_width(tiny_model_dirs) -> None:  # noqa: ANN001
    loaded = load_classifier(tiny_model_dirs["random"], device="cpu")
    sequences = SequenceScorer(loaded, max_batch=4, model=_FourDimensionalUpTo(loaded.model, width=8))
    short = [[2, *range(5, 5 + k), 3] for k in (1, 2, 3, 6)]  # widths 8: prepared masks read right
    np.testing.assert_allclose(sequences.score(short), _one_at_a_time(loaded.model, short), atol=1e-5)
    assert sequences.mask_form == "4d"
    unpadded = [[2, *range(k, k + 6), 3] for k in (7, 20, 40)]  # 8 tokens: no mask at all, same scores
    np.testing.assert_allclose(sequences.score(unpadded), _one_at_a_time(loaded.model, unpadded), atol=1e-5)
    wide = [[2, *range(5, 5 + k), 3] for k in (4, 9, 14, 20)]  # width 24: misread, so the 2-D mask comes back
    np.testing.assert_allclose(sequences.score(wide), _one_at_a_time(loaded.model, wide), atol=1e-5)
    assert sequences.mask_form == "2d"


def test_a_decoder_classifier_is_padded_with_its_own_pad_id() -> None:
    """GPT-2 classifies from each row's last token before the first ``config.pad_token_id``: padding with
    the tokenizer's id (none for GPT-2's, so 0 before) would make it read a padding position."""
    import types

    import transformers

    from fairwatch.monitor.scorer.model import LoadedClassifier

    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, num_labels=2,
                                     pad_token_id=99)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    loaded = LoadedClassifier(model, types.SimpleNamespace(pad_token_id=None), torch.device("cpu"), torch.float32, 2,
                              "gpt2")
    rows = [[5 + (i * 7 + j) % 90 for j in range(1 + i % 11)] for i in range(24)]
    sequences = SequenceScorer(loaded, max_batch=8)
    assert sequences.pad_id == 99
    np.testing.assert_allclose(sequences.score(rows), _one_at_a_time(model, rows), atol=1e-5)
