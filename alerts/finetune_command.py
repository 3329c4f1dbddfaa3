"""``fairwatch finetune``: propose a debiased candidate model from a labeled window of events."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from fairwatch.command_support import OneLineParser, number_between, whole_number
from fairwatch.flags import add_flag, add_progress_flag, comma_list

__all__ = ["add_arguments", "register", "run", "main"]


def _ranged(setting: str):
    """The argparse type of a FinetuneConfig setting's flag, from the range its library check uses."""
    from fairwatch.alerts.finetune import CONFIG_RANGES

    _, lowest, highest, closed, integer, _ = CONFIG_RANGES[setting]
    if integer:
        return whole_number(int(lowest), None if highest == math.inf else int(highest))
    return number_between(lowest, highest, exclusive=not closed)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The job's flags (shared by ``fairwatch finetune`` and ``python -m alerts.finetune_command``)."""
    p.add_argument("input", nargs="?", help="JSONL events (text, label, groups) or CSV (with --text-col/--label-col/--group)")
    p.add_argument("--templates", metavar="CSV_OR_DIR",
                   help="train on the Jigsaw identity templates (en_sentence_templates.csv) instead of INPUT, "
                        "split by sentence skeleton as benchmarks.biased_reference splits them")
    p.add_argument("--model-dir", required=True, help="the serving model's directory (read only)")
    p.add_argument("--out", required=True, help="folder for the candidate (OUT/model) and, by default, OUT/report.json")
    p.add_argument("--report", help="report path (default: OUT/report.json)")
    p.add_argument("--text-col", default="text", help="CSV text column (text)")
    p.add_argument("--label-col", default="label", help="CSV label column, 0/1 (label)")
    add_flag(p, "--group-col", action="append", default=[], metavar="COL", aliases=("--group",),
             help="CSV column of a protected attribute (repeatable) (none)")
    add_flag(p, "--attribute", action="append", metavar="ATTR", aliases=("--attributes",), alias_type=str,
             alias_convert=comma_list,
             help="lexicon attribute for counterfactual copies (repeatable; default: all shipped; with --templates "
                  "the six identity attributes)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--epochs", type=_ranged("epochs"), default=2.0, help="passes over the training split (2.0)")
    p.add_argument("--max-steps", type=_ranged("max_steps"), help="stop after this many optimizer steps (none: --epochs decides)")
    p.add_argument("--max-seconds", type=_ranged("max_seconds"), help="training time budget; the job still evaluates and reports (none: no limit)")
    p.add_argument("--batch-size", type=_ranged("batch_size"), default=64, help="training examples per step (64)")
    p.add_argument("--lr", type=_ranged("lr"), default=2e-5, help="learning rate of the classifier (2e-5)")
    p.add_argument("--gamma", type=_ranged("gamma"), default=2.0, help="weight of the soft gap penalty (2.0)")
    p.add_argument("--delta", type=_ranged("delta"), default=0.1, help="weight of the adversary loss (0.1)")
    p.add_argument("--no-counterfactual", action="store_true", help="no counterfactual data augmentation")
    p.add_argument("--no-reweigh", action="store_true", help="plain cross-entropy, no Kamiran-Calders weights")
    p.add_argument("--holdout", type=_ranged("holdout"), default=0.25, help="share of sentence skeletons held out for the test (0.25)")
    p.add_argument("--val-share", type=_ranged("val_share"), default=0.1, help="share of the rest used for early stopping (0.1)")
    p.add_argument("--eval-every", type=_ranged("eval_every"), help="steps between validation checks (a quarter epoch)")
    p.add_argument("--patience", type=_ranged("patience"), default=4, help="validation checks without improvement before stopping (4)")
    p.add_argument("--max-length", type=_ranged("max_length"), default=64, help="token limit per text (64)")
    p.add_argument("--max-accuracy-drop", type=_ranged("max_accuracy_drop"), default=0.02, help="gate: accuracy may drop at most this (0.02)")
    p.add_argument("--min-gap-reduction", type=_ranged("min_gap_reduction"), default=0.5, help="gate: gap reduced by at least this share (0.5)")
    p.add_argument("--gate-metric", default="fped", help="gap the gate reads, any of monitor.gaps.all_gaps (fped)")
    p.add_argument("--gate-attribute", default="*", help="attribute of the gate gap; '*' pools every group (default)")
    p.add_argument("--max-rows", type=_ranged("max_rows"), help="use a seeded sample of this many rows (smoke runs)")
    p.add_argument("--seed", type=_ranged("seed"), default=0, help="seed of the splits, sampling and training (0)")
    add_progress_flag(p, default=True)
    p.add_argument("--ablation", action="store_true",
                   help="also run plain fine-tuning (no reweighing, penalty, adversary or counterfactual copies) "
                        "under OUT/ablation-plain and report both side by side (twice the time)")


def register(commands: Any) -> None:
    """Add ``finetune`` to the ``fairwatch`` subcommands (entry point ``fairwatch.commands``)."""
    p = commands.add_parser("finetune", help="train a debiased candidate model (never promoted automatically)",
                            description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the job; bad input (FinetuneInputError) is one line on stderr and exit 2 (command_support.run_command)."""
    from fairwatch.alerts.finetune import IDENTITY_ATTRIBUTES, FinetuneConfig, FinetuneInputError, read_csv, read_events, \
        read_templates, run_finetune

    from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon

    from fairwatch.monitor.metric_names import GAP_METRICS

    if args.gate_metric not in GAP_METRICS:
        raise FinetuneInputError(f"--gate-metric {args.gate_metric!r} is not one of {', '.join(GAP_METRICS)}")
    attributes = list(args.attribute) if args.attribute else None
    if args.templates:
        attributes = attributes or list(IDENTITY_ATTRIBUTES)
        read = read_templates(args.templates, CounterfactualGenerator(Lexicon.default().select(attributes)))
        source = args.templates
    elif args.input:
        source = args.input
        if args.input.lower().endswith(".csv"):
            if not args.group_col:
                raise FinetuneInputError("a CSV input needs at least one --group-col COL")
            read = read_csv(args.input, args.text_col, args.label_col, args.group_col)
        elif args.input.lower().endswith((".jsonl", ".ndjson", ".json")):
            read = read_events(args.input)
        else:
            raise FinetuneInputError(f"{args.input}: unknown input format (expected .jsonl or .csv)")
    else:
        raise FinetuneInputError("give an INPUT file or --templates")
    skipped = read.rejected_line(source)
    if skipped:
        print(f"fairwatch finetune: warning: {skipped}", file=sys.stderr, flush=True)
    cfg = FinetuneConfig(
        model_dir=args.model_dir, out=args.out, report=args.report, attributes=attributes, device=args.device,
        epochs=args.epochs, max_steps=args.max_steps, max_seconds=args.max_seconds, batch_size=args.batch_size,
        lr=args.lr, gamma=args.gamma, delta=args.delta, counterfactual=not args.no_counterfactual,
        reweigh=not args.no_reweigh, holdout=args.holdout, val_share=args.val_share, eval_every=args.eval_every,
        patience=args.patience, max_length=args.max_length, max_accuracy_drop=args.max_accuracy_drop,
        min_gap_reduction=args.min_gap_reduction, gate_metric=args.gate_metric, gate_attribute=args.gate_attribute,
        seed=args.seed, max_rows=args.max_rows, progress=args.progress,
    )
    if args.ablation:
        from fairwatch.alerts.finetune_ablation import run_ablation

        train = run_ablation
    else:
        train = run_finetune
    read_stats = {"rejected": read.rejected, "rejected_reasons": dict(read.reasons), "unlabeled": read.unlabeled}
    report = train(cfg, read.examples, source, read_stats,
                   templates_mode=bool(args.templates))
    # Exit 0 whether or not the gates pass: a failed gate is a result, recorded in the report.
    return 0 if report else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m alerts.finetune_command`` (where the ``fairwatch`` script is not installed, e.g. the GPU box)."""
    # OneLineParser: a bad flag is one line here too, as under `fairwatch finetune`.
    parser = OneLineParser(prog="fairwatch finetune", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(command="finetune", handler=run)
    from fairwatch.command_support import run_command  # the same one-line errors as `fairwatch finetune`

    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
