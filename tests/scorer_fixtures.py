"""Tiny real Hugging Face classifiers for the scorer tests (built in a second on CPU).

Four models share one WordLevel tokenizer:

* ``random``: a 2-layer BERT with hidden size 32, random weights (seeded);
* ``ignores``: the same with the embeddings of every lexicon term zeroed, so a
  swap changes nothing the model sees;
* ``unit_gain``: like ``random`` with weights of std 1/sqrt(fan-in), so
  activations keep their scale from layer to layer as in a trained model
  rather than saturating: the model for comparing int8 weights against fp32
  (``random``'s wider weights amplify any rounding into large score changes);
* ``keys``: weights set by hand so the score is (almost) 1 when the text holds
  more "male-side" gender terms than "female-side" ones and (almost) 0 the
  other way round: attention is uniform (Q = K = 0, V = identity), feed-forward
  blocks are switched off, and the classifier reads one embedding direction.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

FILLERS = (
    "the my a an is was went home called friend book teacher said hello there manager theme park gave "
    "pen own and to of people this that good bad hate love nice i you it they we are be at in on with "
    "for yesterday today wrote met saw told tall kind angry smart doctor nurse car dog , . ' s ! ? -"
).split()


def tiny_vocab() -> list[str]:
    from fairwatch.monitor.scorer.counterfactuals import Lexicon

    words: list[str] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    lex = Lexicon.default()
    for attr in lex.attributes.values():
        for term in attr.all_terms:
            words.extend(re.findall(r"\w+", term))  # as the BERT pre-tokenizer splits "dark-skinned"
    words.extend(FILLERS)
    return list(dict.fromkeys(words))


def male_female_terms() -> tuple[set[str], set[str]]:
    from fairwatch.monitor.scorer.counterfactuals import Lexicon

    gender = Lexicon.default().attributes["gender"]
    male = {a for a, _ in gender.pairs} | {"his", "him"}
    female = {b for _, b in gender.pairs} | {"her", "hers"}
    return male, female


def build_tiny_model(out_dir: str | Path, kind: str = "random", seed: int = 0) -> Path:
    """Save a tiny BertForSequenceClassification + fast tokenizer to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(tiny_vocab())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    hidden = 32
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=0,
    )
    model = BertForSequenceClassification(config).eval()
    lexicon_words = _lexicon_words()  # once: it reads every lexicon (thousands of first names)
    lexicon_ids = [i for w, i in vocab.items() if w in lexicon_words]
    with torch.no_grad():
        # Explicit, seeded init with a wide spread: default init gives near-constant scores at this size.
        # Seeded per parameter and, for word embeddings, per word: the weights a text meets do not change
        # when the lexicons (hence the vocabulary) grow.
        for name, param in model.named_parameters():
            if param.dim() < 2:
                continue
            scale = 1.0 if "classifier" in name else 0.3
            if kind == "unit_gain":
                scale = 1.0 / param.shape[1] ** 0.5
            if name.endswith("word_embeddings.weight"):
                for word, i in vocab.items():
                    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(word.encode()))
                    param[i] = torch.randn(param.shape[1], generator=gen) * scale
            else:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
        if kind == "ignores":
            model.bert.embeddings.word_embeddings.weight[lexicon_ids] = 0.0
        elif kind == "keys":
            _make_keys_model(model, vocab)
        elif kind not in ("random", "unit_gain"):
            raise ValueError(kind)
    model.save_pretrained(out)
    return out


def _lexicon_words() -> set[str]:
    from fairwatch.monitor.scorer.counterfactuals import Lexicon

    return {w for a in Lexicon.default().attributes.values() for t in a.all_terms for w in re.findall(r"\w+", t)}


def _make_keys_model(model, vocab: dict[str, int]) -> None:  # noqa: ANN001 - torch types stay optional
    import torch

    male, female = male_female_terms()
    emb = model.bert.embeddings
    emb.word_embeddings.weight.zero_()
    emb.position_embeddings.weight.zero_()
    emb.token_type_embeddings.weight.zero_()
    for w in male:
        emb.word_embeddings.weight[vocab[w], 0] = 3.0
    for w in female:
        emb.word_embeddings.weight[vocab[w], 0] = -3.0
    eye = torch.eye(model.config.hidden_size)
    for layer in model.bert.encoder.layer:
        att = layer.attention
        att.self.query.weight.zero_(); att.self.query.bias.zero_()
        att.self.key.weight.zero_(); att.self.key.bias.zero_()
        att.self.value.weight.copy_(eye); att.self.value.bias.zero_()
        att.output.dense.weight.copy_(eye); att.output.dense.bias.zero_()
        layer.output.dense.weight.zero_(); layer.output.dense.bias.zero_()  # feed-forward adds nothing
    model.bert.pooler.dense.weight.copy_(eye)
    model.bert.pooler.dense.bias.zero_()
    model.classifier.weight.zero_()
    model.classifier.bias.zero_()
    model.classifier.weight[1, 0] = 10.0  # positive logit follows the gender direction
