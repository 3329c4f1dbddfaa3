"""``fairwatch replay FILE``: a CSV or JSONL file through the core pipeline, no broker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from fairwatch.consumers.files import FORMATS, CsvMapping, SourceError, read_events
from fairwatch.command_support import UsageError, config_from_args, finite_float, keep_serving, serve_registry
from fairwatch.flags import add_config_flags
from fairwatch.flags import NoEffect, add_flag, add_metrics_flags, add_progress_flag, add_report_flag
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report, format_table, to_json


def add_mapping_flags(parser: argparse.ArgumentParser) -> None:
    """CSV column mapping, shared with ``fairwatch produce``."""
    parser.add_argument("--format", choices=FORMATS, help="input format (default: from the file ending)")
    parser.add_argument("--id-col", help="CSV column with the event id (default: the line number)")
    parser.add_argument("--prediction-col", help="CSV column with the 0/1 decision (none: from --score-col and --threshold)")
    parser.add_argument("--score-col", help="CSV column with the model score (none)")
    parser.add_argument("--threshold", type=finite_float, help="prediction = score >= THRESHOLD (CSV and JSONL)")
    parser.add_argument("--label-col", help="CSV column with the 0/1 outcome; empty = not known yet (none: no labels)")
    add_flag(parser, "--group-col", action="append", default=[], metavar="COL", aliases=("--group",),
             help="CSV column of a protected attribute (repeatable; JSONL events carry their groups) (none)")
    parser.add_argument("--ts-col", help="CSV column with the event time (epoch seconds or ISO 8601)")
    parser.add_argument("--text-col", help="CSV column with the model's input text (none)")
    parser.add_argument("--model", help=f"model name for CSV rows and JSONL events without one ({MonitorConfig().default_model})")


def mapping_from_args(args: argparse.Namespace) -> CsvMapping:
    return CsvMapping(
        id_col=args.id_col, prediction_col=args.prediction_col, score_col=args.score_col,
        threshold=args.threshold, label_col=args.label_col, group_cols=list(args.group_col),
        ts_col=args.ts_col, text_col=args.text_col, model=args.model or MonitorConfig().default_model,
    )


def register(commands) -> None:
    parser = commands.add_parser("replay", help="replay a CSV or JSONL file through the monitor (no broker)")
    parser.add_argument("file", help="CSV or JSONL file")
    add_mapping_flags(parser)
    add_config_flags(parser)
    add_report_flag(parser)
    add_metrics_flags(parser, port_help="serve /metrics on this port and keep it up after the replay (none: no server)",
                      aliases=("--serve",))
    add_progress_flag(parser, default=False)
    add_scorer_flags(parser)
    parser.set_defaults(handler=run)


def add_scorer_flags(parser: argparse.ArgumentParser) -> None:
    """The optional counterfactual scorer (needs the 'ml' extra: torch, transformers)."""
    group = parser.add_argument_group("counterfactual scorer (texts needed: --text-col or a JSONL 'text' field)")
    group.add_argument("--scorer-model", metavar="DIR", help="local Hugging Face classifier directory: score each text "
                       "and its group-swapped variants, add <model>:debiased outputs (none: no scorer)")
    group.add_argument("--scorer-device", help="cpu, cuda, cuda:N (default: cuda if available)")
    group.add_argument("--scorer-cpu-runtime", metavar="RUNTIME", help="on CPU: torch (default), onnx (ONNX Runtime, "
                       "same scores), onnx-int8 (int8 weights: faster, scores move slightly); the 'onnx' extra")
    group.add_argument("--scorer-compile", action="store_true", default=None,
                       help="run the classifier under torch.compile (CUDA graphs on a GPU): each new batch shape is "
                       "compiled, and checked against the eager model, before its scores are used; slower to start "
                       "(docs/scorer.md)")
    group.add_argument("--scorer-threshold", type=finite_float, default=0.5, help="decision threshold on scorer scores (0.5)")
    group.add_argument("--scorer-batch", action=NoEffect, why="the scorer sizes its batches by padded tokens "
                       "(docs/scorer.md)")
    group.add_argument("--lexicon", metavar="FILE", help="lexicon of group terms, JSON or TOML (default: shipped lexicons)")
    group.add_argument("--postprocess-attribute", metavar="ATTR", help="add <model>:postprocessed outputs with "
                       "per-group thresholds for ATTR, refitted on the labels held (none)")
    group.add_argument("--refit-every", type=int, default=1000, help="labels between post-processor refits (1000)")
    responses = parser.add_argument_group("response classifier (generation events; see docs/generation.md)")
    responses.add_argument("--response-model", metavar="DIR", help="local Hugging Face sequence classifier "
                           "(toxicity, sentiment, regard): score each response, batched, and track the per-group "
                           "toxic share and its breach decision beside VADER")
    responses.add_argument("--response-label", metavar="LABEL", help="the label whose probability counts (a name of "
                           "the model's id2label, or an index; default: the last label)")
    responses.add_argument("--response-threshold", type=finite_float, default=0.5,
                           help="a response is toxic when the label's probability is at least this (0.5)")
    responses.add_argument("--response-device", help="cpu, cuda, cuda:N (default: cuda if available)")
    shadow = parser.add_argument_group("shadow evaluation (texts needed; see docs/shadow.md)")
    shadow.add_argument("--shadow-candidate", metavar="DIR", help="candidate Hugging Face classifier directory (the "
                        "fine-tune's candidate/): score each text of --shadow-model beside production and track "
                        "<model>:candidate and <model>:baseline (production on the same events); changes nothing")
    shadow.add_argument("--shadow-model", metavar="NAME", help="the production model the candidate shadows (none: no shadow)")
    shadow.add_argument("--shadow-threshold", type=finite_float, default=0.5,
                        help="decision threshold on the candidate's scores (0.5)")


def build_response_scorer(args: argparse.Namespace):
    """The ResponseScorer with the classifier --response-model asks for, or None (VADER and refusals only)."""
    if args.response_model is None:
        for flag in ("response_label", "response_device"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --response-model")
        return None
    if not 0.0 <= args.response_threshold <= 1.0:
        raise UsageError("--response-threshold must be between 0 and 1")
    try:
        from fairwatch.monitor.generation.response_classifier import ResponseClassifier
        from fairwatch.monitor.scorer.model import ModelLoadError
    except ImportError as exc:
        raise UsageError(f"--response-model needs the 'ml' extra (torch, transformers): {exc}") from None
    from fairwatch.monitor.generation import ResponseScorer

    try:
        classifier = ResponseClassifier(args.response_model, label=args.response_label,
                                        threshold=args.response_threshold, device=args.response_device)
    except (ModelLoadError, ValueError) as exc:
        raise UsageError(f"--response-model: {exc}") from None
    return ResponseScorer(classifier=classifier)


class ScorerStages:
    """The pipeline stages the scorer flags ask for: the counterfactual scorer, then the shadow candidate (fixed,
    or hot-attached through --shadow-control); either may be None."""

    def __init__(self, counterfactual=None, shadow=None) -> None:
        self.counterfactual = counterfactual
        self.shadow = shadow

    def stages(self) -> list:
        """In the order the pipeline runs them (``Pipeline(config, stages=...)``)."""
        return [stage for stage in (self.counterfactual, self.shadow) if stage is not None]

    def collector(self):
        """The counterfactual statistics' /metrics collector, or None (the shadow's numbers are its models')."""
        return self.counterfactual.collector() if self.counterfactual is not None else None

    def close(self) -> None:
        for stage in self.stages():
            stage.close()


def build_stages(args: argparse.Namespace) -> ScorerStages:
    """The stages the flags ask for (loaded: a bad model or lexicon fails here, before anything starts); bad
    input: a UsageError."""
    counterfactual = build_counterfactual_step(args)
    try:
        return ScorerStages(counterfactual, build_shadow_step(args))
    except UsageError:
        if counterfactual is not None:
            counterfactual.close()
        raise


def build_shadow_step(args: argparse.Namespace):
    """A ShadowStep when --shadow-candidate is given; a HotShadowStep when --shadow-control is (`fairwatch
    run`: attached later, without a restart); else None."""
    control = getattr(args, "shadow_control", None)
    if control is not None:
        if args.shadow_candidate is not None or args.shadow_model is not None:
            raise UsageError("--shadow-control names the candidate and its model: leave out --shadow-candidate and "
                             "--shadow-model")
        from fairwatch.monitor.scorer.shadow_control import HotShadowStep

        def load(attachment):
            try:
                return load_shadow_step(attachment.candidate, attachment.model, attachment.threshold,
                                        args.scorer_device)
            except UsageError as exc:
                raise ValueError(str(exc)) from None

        step = HotShadowStep(control, load)
        step.poll()  # a candidate already named there is attached before the first batch
        return step
    if args.shadow_candidate is None:
        if args.shadow_model is not None:
            raise UsageError("--shadow-model needs --shadow-candidate (the candidate model directory)")
        return None
    if not args.shadow_model:
        raise UsageError("--shadow-candidate needs --shadow-model (the production model the candidate shadows)")
    if not 0.0 <= args.shadow_threshold <= 1.0:
        raise UsageError("--shadow-threshold must be between 0 and 1")
    return load_shadow_step(args.shadow_candidate, args.shadow_model, args.shadow_threshold, args.scorer_device)


def load_shadow_step(candidate: str, model: str, threshold: float, device: str | None):
    """The candidate directory loaded into a ShadowStep of ``model``; a UsageError says why not."""
    try:
        from fairwatch.monitor.scorer.model import ModelLoadError
        from fairwatch.monitor.scorer.scoring import CounterfactualScorer
        from fairwatch.monitor.scorer.shadow import ShadowStep
    except ImportError as exc:
        raise UsageError(f"--shadow-candidate needs the 'ml' extra (torch, transformers): {exc}") from None
    candidate_dir = Path(candidate)
    if not (candidate_dir / "config.json").is_file() and (candidate_dir / "model" / "config.json").is_file():
        candidate_dir = candidate_dir / "model"  # the fine-tune's --out folder (the incident's candidate_dir)
    try:
        # Only the text as written is scored (score_texts): no variants, no worker processes.
        scorer = CounterfactualScorer(candidate_dir, device=device, workers=0, threshold=threshold)
    except ModelLoadError as exc:
        raise UsageError(f"--shadow-candidate: {exc}") from None
    return ShadowStep(scorer, model, threshold=threshold, candidate_dir=str(candidate))


def build_counterfactual_step(args: argparse.Namespace):
    """The ScorerStep the --scorer-* flags ask for, or None."""
    if args.scorer_model is None:
        for flag in ("lexicon", "postprocess_attribute", "scorer_device", "scorer_cpu_runtime", "scorer_compile"):
            if getattr(args, flag) is not None and not (flag == "scorer_device" and (
                    args.shadow_candidate or getattr(args, "shadow_control", None))):
                raise UsageError(f"--{flag.replace('_', '-')} needs --scorer-model")
        return None
    if args.refit_every < 1:
        raise UsageError("--refit-every must be at least 1")
    if not 0.0 <= args.scorer_threshold <= 1.0:
        raise UsageError("--scorer-threshold must be between 0 and 1")
    try:
        from fairwatch.monitor.scorer.counterfactuals import Lexicon
        from fairwatch.monitor.scorer.scoring import CounterfactualScorer
        from fairwatch.monitor.scorer.step import ScorerStep
    except ImportError as exc:
        raise UsageError(f"--scorer-model needs the 'ml' extra (torch, transformers): {exc}") from None
    # A LexiconError or ModelLoadError is one line, exit 2 (fairwatch.command_support.run_command).
    lexicon = (Lexicon.from_file(args.lexicon) if args.lexicon else Lexicon.default()).checked()
    scorer = CounterfactualScorer(args.scorer_model, lexicon, device=args.scorer_device,
                                  threshold=args.scorer_threshold, cpu_runtime=args.scorer_cpu_runtime or "torch",
                                  compile=bool(args.scorer_compile))
    scorer.preparer.warm_up()  # every variant worker (on a GPU host) running before the first batch, not during it
    return ScorerStep(scorer, postprocess_attribute=args.postprocess_attribute, refit_every=args.refit_every)


def format_counterfactual(section: dict) -> str:
    """The counterfactual part of the table report."""
    lines = ["", f"== counterfactual (group terms swapped; decision threshold {section['threshold']}) =="]
    header = ["model", "attribute", "texts", "flip_rate", "mean|d|", "max|d|", "top terms (mean |d|)"]
    rows = []
    for model, attributes in section["models"].items():
        for attribute, s in attributes.items():
            terms = ", ".join(f"{t['term']} {t['mean_abs_change']:.3f}" for t in s["top_terms"])
            rows.append([model, attribute, str(s["texts"]),
                         *(f"{s[k]:.3f}" if s[k] is not None else "-" for k in ("flip_rate", "mean_abs_change",
                                                                               "max_abs_change")), terms])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.append(f"   {section['texts']} texts, {section['sequences']} sequences scored "
                 f"in {section['scoring_seconds']:.2f} s")
    post = section.get("postprocessing")
    if post:
        for model, thresholds in post["thresholds"].items():
            shown = ", ".join(f"{g}: {t:.3f}" for g, t in sorted(thresholds.items())) or "base threshold for all"
            lines.append(f"   {model}:postprocessed thresholds by {post['attribute']}: {shown}")
    return "\n".join(lines)


def format_shadow(section: dict) -> str:
    """The shadow part of the table report: what was scored, and where the comparison lives."""
    return (f"\n== shadow: {section['candidate_dir']} beside {section['model']} ==\n"
            f"   {section['scored']} predictions scored by the candidate ({section['candidate_model']}; production "
            f"on the same events: {section['baseline_model']}), {section['without_text']} without text "
            f"(production only), {section['refused']} refused")


def run(args: argparse.Namespace) -> int:
    if args.score_col and args.threshold is None and not args.prediction_col:
        raise UsageError("--score-col needs --threshold (or give --prediction-col)")
    overrides = {"default_model": args.model, "threshold": args.threshold}
    if args.group_col:
        overrides["attributes"] = list(args.group_col)
    config = config_from_args(args, **overrides)
    scorer = build_stages(args)  # before anything starts: a bad model or lexicon fails fast
    responses = build_response_scorer(args)
    pipeline = Pipeline(config, stages=scorer.stages())
    if responses is not None:
        pipeline.response_scorer = responses
    server = None
    if args.metrics_port is not None:
        from fairwatch.monitor.exporter import make_registry

        registry = make_registry(pipeline)
        collector = scorer.collector()
        if collector is not None:
            registry.register(collector)
        server = serve_registry(registry, args.metrics_port, args.metrics_addr)
    try:
        batches = read_events(args.file, args.format, mapping_from_args(args), pipeline.parser)
        with tqdm(unit="ev", desc="replay", file=sys.stderr, disable=not args.progress) as progress:
            for batch in batches:
                pipeline.process_events(batch)
                progress.update(len(batch))
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    finally:
        scorer.close()
    report = build_report(pipeline, args.model)
    counterfactual, shadow = scorer.counterfactual, scorer.shadow
    if counterfactual is not None:
        report["counterfactual"] = counterfactual.report()
    if shadow is not None:
        report["shadow"] = shadow.report()
    if args.report == "json":
        print(to_json(report))
    else:
        print(format_table(report) + (format_counterfactual(report["counterfactual"]) if counterfactual else "")
              + (format_shadow(report["shadow"]) if shadow is not None else ""))
    sys.stdout.flush()
    stats = pipeline.stats
    if stats.valid == 0 and not stats.outcomes:
        first = f" (first: {stats.rejection_samples[0][1]})" if stats.rejection_samples else ""
        print(f"fairwatch replay: error: no valid event in {args.file}: {stats.invalid} refused{first}",
              file=sys.stderr, flush=True)
        return 1
    if server is not None:
        keep_serving("replay done; still serving /metrics, Ctrl-C to stop")
    return 0
