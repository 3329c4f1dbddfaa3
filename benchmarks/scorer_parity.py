"""Serial vs worker-pool parity of the counterfactual scorer: the same texts, the same numbers.

Scores template texts with ``CounterfactualScorer(workers=0)`` (variants
built in-process) and with a pool of worker processes, on the same device,
and prints the largest absolute difference of the original and debiased
scores and whether the flip decisions agree. A file, not stdin: the spawn
pool re-imports the main module.

    python -m benchmarks.scorer_parity --model-dir /tmp/biased/model --data .models/data --device cuda
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np


def template_texts(data: str, n: int, seed: int) -> list[str]:
    """``n`` phrases of en_sentence_templates.csv, a seeded sample."""
    path = Path(data)
    path = path / "en_sentence_templates.csv" if path.is_dir() else path
    with path.open(newline="", encoding="utf-8") as f:
        texts = [row["phrase"] for row in csv.DictReader(f)]
    return random.Random(seed).sample(texts, min(n, len(texts)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data", default=".models/data")
    p.add_argument("--device", default=None)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--chunk-texts", type=int, default=256, help="small chunks so that every worker gets some")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)

    from fairwatch.monitor.scorer.scoring import CounterfactualScorer

    texts = template_texts(args.data, args.n, args.seed)
    results, used = {}, {}
    for workers in (0, args.workers):
        scorer = CounterfactualScorer(args.model_dir, device=args.device, workers=workers, chunk_texts=args.chunk_texts)
        t0 = time.perf_counter()
        results[workers] = scorer.score(texts)
        seconds = time.perf_counter() - t0
        used[workers] = scorer.preparer.workers  # 0 here means the pool fell back to in-process
        scorer.preparer.close()
        print(f"workers={workers}: {len(texts)} texts, {results[workers].n_sequences} sequences, {seconds:.2f}s "
              f"(workers in use after scoring: {used[workers]})", flush=True)
    serial, parallel = results[0], results[args.workers]
    out = {
        "device": str(scorer.device),
        "texts": len(texts),
        "workers": args.workers,
        "pool_used": used[args.workers] == args.workers,
        "max_abs_diff_original": float(np.nanmax(np.abs(serial.original_score - parallel.original_score))),
        "max_abs_diff_debiased": float(np.nanmax(np.abs(serial.debiased_score - parallel.debiased_score))),
        "flipped_equal": bool(np.array_equal(serial.flipped, parallel.flipped)),
        "n_variants_equal": bool(np.array_equal(serial.n_variants, parallel.n_variants)),
        "flipped_count": int(serial.flipped.sum()),
    }
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
