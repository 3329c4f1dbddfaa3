"""``fairwatch score``: counterfactual re-scoring of a CSV/JSONL file of texts."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

from fairwatch.command_support import UsageError, finite_float
from fairwatch.flags import add_flag
from fairwatch.monitor.text_rows import RowError, TextFileError, detect_format, read_text_rows

__all__ = ["register", "run_score", "read_texts", "variants_by_attribute"]


class InputError(UsageError):
    """Bad command-line input: ``fairwatch.cli`` reports it as one line on stderr, exit code 2."""


# A BERT or RoBERTa sequence spends two tokens on [CLS]/[SEP] (<s>/</s>); below three, no token
# of the text is left and every text scores as if empty.
MIN_MAX_LENGTH = 3


def max_length(text: str) -> int:
    """argparse type of --max-length."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < MIN_MAX_LENGTH:
        raise argparse.ArgumentTypeError(f"{value} leaves no room for the text (at least {MIN_MAX_LENGTH}: the "
                                         "special tokens and one token of text)")
    return value


def check_max_length(length: int, scorer: Any) -> None:
    """Refuse a --max-length this model's tokenizer or position table cannot take (MIN_MAX_LENGTH is a floor for
    the common tokenizers; this is the model's own)."""
    special = scorer.tokens.n_prefix + scorer.tokens.n_suffix
    if length <= special:
        raise InputError(f"--max-length {length} leaves no room for the text: this tokenizer adds {special} "
                         "special tokens to each sequence")
    # RoBERTa's table has two more rows than positions it can use; its tokenizer's model_max_length says 512.
    limits = [getattr(scorer.loaded.model.config, "max_position_embeddings", None),
              getattr(scorer.loaded.tokenizer, "model_max_length", None)]
    limit = min((int(n) for n in limits if isinstance(n, int) and n > 0), default=None)
    if limit is not None and length > limit:
        raise InputError(f"--max-length {length} is more than this model takes ({limit} tokens)")


def check_output(output: str) -> None:
    """Refuse an --output that cannot be written, before the model is loaded and the texts scored."""
    if output == "-":
        return
    path = Path(output)
    if path.is_dir():
        raise InputError(f"--output {output!r} is a directory, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"--output {output!r}: the directory {str(parent)!r} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise InputError(f"--output {output!r} cannot be written (permission denied)")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``score`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "score",
        help="re-score texts with a classifier and their counterfactual variants",
        description="Score each text of a CSV or JSONL file as written and with group terms swapped; "
        "print JSONL per row or a summary table with per-term attribution.",
    )
    p.add_argument("input", help="CSV or JSONL file (by extension: .csv, .jsonl/.ndjson/.json)")
    p.add_argument("--text-col", default="text", help="column / key holding the text (default: text)")
    p.add_argument("--model-dir", required=True, help="local Hugging Face model directory")
    p.add_argument("--lexicon", default=None, help="lexicon file (JSON or TOML); default: the shipped lexicons")
    p.add_argument("--extend-default", action="store_true", help="add --lexicon to the shipped lexicons instead of replacing them")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--cpu-runtime", default="torch", help="on CPU: torch (default), onnx (ONNX Runtime, same scores), "
                   "onnx-int8 (int8 weights: faster, scores move slightly); the 'onnx' extra")
    p.add_argument("--compile", action="store_true", help="run the classifier under torch.compile (CUDA graphs on a "
                   "GPU), each new batch shape checked against the eager model first; slower to start")
    p.add_argument("--batch-size", type=int, default=1024, help="texts per scoring call (default: 1024)")
    p.add_argument("--max-length", type=max_length, default=64,
                   help=f"token limit per sequence, special tokens included (default: 64; at least {MIN_MAX_LENGTH})")
    p.add_argument("--threshold", type=finite_float, default=0.5, help="decision threshold (default: 0.5)")
    add_flag(p, "--model", default="default", aliases=("--model-name",), help="model name in the summary (default)")
    p.add_argument("--format", choices=["jsonl", "summary"], default="jsonl", help="per-row JSONL or summary table (jsonl)")
    p.add_argument("--output", "-o", default="-", help="output file (default: stdout)")
    p.set_defaults(handler=run_score)
    return p


def read_texts(path: Path, text_col: str) -> Iterator[tuple[int, Any]]:
    """(row number, text or None) per row; None marks a bad row (counted and skipped).

    The row number is the data row's for CSV, the line's for JSONL.
    """
    try:
        fmt = detect_format(path)
    except TextFileError:
        raise InputError(f"{path}: unknown input format {path.suffix.lower()!r} (expected .csv or .jsonl)") from None
    seen_col = False
    for number, row in enumerate(read_text_rows(path, text_col, label_col=None, group_cols=(), fmt=fmt), 1):
        if isinstance(row, RowError):
            seen_col = seen_col or row.reason not in ("bad_json", "missing_field")
            yield (number if fmt == "csv" else row.line), None
        else:
            seen_col = True
            yield (number if fmt == "csv" else row.line), row.text
    if fmt == "jsonl" and not seen_col:
        raise InputError(f"key {text_col!r} not found in any row of {path}")


def run_score(args: argparse.Namespace) -> int:
    from fairwatch.monitor.scorer.counterfactuals import Lexicon
    from fairwatch.monitor.scorer.stats import CounterfactualStats

    path = Path(args.input)
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} not found")
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    check_output(args.output)
    # A LexiconError, TextFileError or ModelLoadError is one line, exit 2 (fairwatch.command_support.run_command).
    if args.lexicon is None:
        lexicon = Lexicon.default()
    elif args.extend_default:
        lexicon = Lexicon.default().extend(Lexicon.from_file(args.lexicon))
    else:
        lexicon = Lexicon.from_file(args.lexicon)
    lexicon.checked()
    try:
        from fairwatch.monitor.scorer.scoring import CounterfactualScorer
    except ImportError as exc:
        raise InputError(f"the scorer needs the 'ml' extra (torch, transformers): {exc}") from exc
    # Read (and validate) the input before loading a model: bad input fails fast.
    rows = list(read_texts(path, args.text_col))
    scorer = CounterfactualScorer(
        args.model_dir, lexicon, device=args.device, threshold=args.threshold, max_length=args.max_length,
        cpu_runtime=args.cpu_runtime, compile=args.compile,
    )
    check_max_length(args.max_length, scorer)

    stats = CounterfactualStats()
    bad_rows = 0
    try:
        out: TextIO = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    except OSError as exc:  # changed since check_output, or refused for a reason it cannot see
        raise InputError(f"--output {args.output!r} cannot be written ({exc.strerror})") from None
    try:
        for start in range(0, len(rows), args.batch_size):
            chunk = rows[start : start + args.batch_size]
            result = scorer.score([t for _, t in chunk])
            stats.update(result, model=args.model)
            bad_rows += len(result.rejected)
            if args.format == "jsonl":
                by_attribute = variants_by_attribute(result)
                for k, (row_no, _) in enumerate(chunk):
                    if k in result.rejected:
                        continue
                    out.write(json.dumps({
                        "row": row_no,
                        "score": round(float(result.original_score[k]), 6),
                        "debiased_score": round(float(result.debiased_score[k]), 6),
                        "flipped": bool(result.flipped[k]),
                        "max_abs_change": round(float(result.max_abs_change[k]), 6),
                        "n_variants": int(result.n_variants[k]),
                        "variants_by_attribute": {a: int(c[k]) for a, c in by_attribute.items() if c[k]},
                    }) + "\n")
        if args.format == "summary":
            _write_summary(out, stats, len(rows), bad_rows)
    finally:
        if out is not sys.stdout:
            out.close()
    if bad_rows:
        print(f"fairwatch score: skipped {bad_rows} bad row(s) of {len(rows)}", file=sys.stderr)
    return 0


def variants_by_attribute(result: Any) -> dict[str, Any]:
    """Per attribute, the number of variants of each text of ``result`` (a numpy array per attribute)."""
    import numpy as np

    n = len(result)
    return {a: np.bincount(d.text_index, minlength=n) for a, d in result.attributes.items()}


def _write_summary(out: TextIO, stats: Any, n_rows: int, bad_rows: int) -> None:
    out.write(f"rows: {n_rows}  skipped: {bad_rows}\n")
    out.write(f"{'model':<12} {'attribute':<16} {'texts':>7} {'variants':>9} {'flip_rate':>9} {'mean|d|':>8} {'max|d|':>8}  top terms (mean |d|, out/in)\n")
    for row in stats.summary():
        terms = ", ".join(
            f"{t['term']} ({t['mean_abs_change']:.3f}, {t['swapped_out']}/{t['swapped_in']})" for t in row["top_terms"]
        )
        out.write(
            f"{row['model']:<12} {row['attribute']:<16} {row['texts']:>7} {row['variants']:>9} "
            f"{row['flip_rate']:>9.3f} {row['mean_abs_change']:>8.4f} {row['max_abs_change']:>8.4f}  {terms}\n"
        )
