"""The adversarial fine-tune job: propose a debiased candidate of a text classifier.

From a labeled window of events (``text``, ``label``, ``groups``) and a model
directory, train a candidate with

    L = CE weighted by Kamiran-Calders w(g, y) = P(g)P(y)/P(g, y)
        + gamma * soft gap penalty on the batch
        + delta * adversary loss through a gradient-reversal layer

on the window plus its counterfactual copies (group terms swapped, same
label). Early stopping picks, on a validation split, the checkpoint with the
smallest gate gap among those that keep accuracy; a held-out test split,
never seen in training or selection, gives the before/after report and the
promotion decision. The job writes only to its output folder: it never
replaces the serving model, and promotion is a human's command.

torch and transformers are imported inside the functions that need them, so
the data, report and gate code works (and is tested) without them.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import numbers
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fairwatch.monitor.counts import contributions
from fairwatch.monitor.gaps import EQUALITY_DIFFERENCES, all_gaps, equality_difference_value
from fairwatch.monitor.rates import group_rates, proportion, safe_ratio
from fairwatch.monitor.score_auc import roc_auc
from fairwatch.monitor.text_rows import RowError, TextFileError, check_columns, csv_header, csv_records, open_text, \
    parse_label, read_text_rows
from fairwatch.monitor.errors import FairwatchError, UsageError

__all__ = [
    "ALL_GROUPS",
    "CONFIG_RANGES",
    "Example",
    "FinetuneConfig",
    "FinetuneDivergedError",
    "FinetuneInputError",
    "Gates",
    "IDENTITY_ATTRIBUTES",
    "decide_promotion",
    "evaluation_summary",
    "read_csv",
    "read_events",
    "read_templates",
    "reweighing_weights",
    "roc_auc",
    "run_finetune",
    "split_examples",
]

# The pooled family of every group of every attribute (Dixon et al.'s identity terms): the default gate.
ALL_GROUPS = "*"
# Attributes of the shipped lexicon that the Jigsaw templates exercise (as in benchmarks.biased_reference).
IDENTITY_ATTRIBUTES = ("sexuality", "gender_identity", "ethnicity", "religion", "age", "disability")


class FinetuneInputError(UsageError, ValueError):
    """Bad input to the job (file, labels, groups, model directory): ``fairwatch.cli`` makes it one line, exit 2."""


class FinetuneDivergedError(FairwatchError, RuntimeError):
    """Training produced non-finite weights: no candidate is written (one line, exit 1: the input was valid)."""

    exit_code = 1


@dataclass
class Example:
    """One labeled text and its groups (attribute -> group)."""

    text: str
    label: int
    groups: dict[str, str]
    template: str = ""  # sentence family when the data has one (the Jigsaw templates do)


@dataclass
class ReadResult:
    examples: list[Example]
    rejected: int = 0  # rows that are not a usable event (bad JSON, no text, bad label)
    unlabeled: int = 0  # events whose label has not arrived
    reasons: dict[str, int] = field(default_factory=dict)  # rejected rows per RowError.reason
    first_error: str | None = None  # the first rejected row's message, for the one stderr line

    def reject(self, error: RowError) -> None:
        self.rejected += 1
        self.reasons[error.reason] = self.reasons.get(error.reason, 0) + 1
        if self.first_error is None:
            self.first_error = error.message

    def rejected_line(self, source: str) -> str | None:
        """One line for stderr about the skipped rows (None when none was): otherwise only report.json tells."""
        if not self.rejected:
            return None
        counts = ", ".join(f"invalid ({reason}): {n}" for reason, n in sorted(self.reasons.items()))
        rows = "row" if self.rejected == 1 else "rows"
        return f"{source}: skipped {self.rejected} malformed {rows} ({counts}); first: {self.first_error}"


# --------------------------------------------------------------------------- reading


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FinetuneInputError(f"input file {str(path)!r} not found")
    return p


def _collect(rows) -> ReadResult:
    out = ReadResult([])
    try:
        for row in rows:
            if isinstance(row, RowError):
                out.reject(row)
            elif row.label is None:
                out.unlabeled += 1
            else:
                out.examples.append(Example(row.text, row.label, row.groups))
    except TextFileError as exc:
        raise FinetuneInputError(str(exc)) from None
    return out


def read_events(path: str | Path) -> ReadResult:
    """Events of the prediction contract from a JSONL file (``text``, ``label``, ``groups``)."""
    return _collect(read_text_rows(_check_file(path), fmt="jsonl"))


def read_csv(path: str | Path, text_col: str, label_col: str, group_cols: Sequence[str]) -> ReadResult:
    """Labeled rows of a CSV file; each ``group_cols`` column is an attribute."""
    return _collect(read_text_rows(_check_file(path), text_col, label_col, group_cols, fmt="csv"))


def read_templates(path: str | Path, generator: Any) -> ReadResult:
    """The Jigsaw identity templates (``template,toxicity,phrase``); groups are the lexicon terms found.

    Read as the windows' CSV files are (``monitor.text_rows``): undecodable bytes become U+FFFD, and a row
    that is short, has no phrase or an unknown toxicity is skipped and counted, not the end of the run.
    """
    p = Path(path)
    p = _check_file(p / "en_sentence_templates.csv" if p.is_dir() else p)
    out = ReadResult([])
    try:
        with open_text(p) as f:
            reader = csv.DictReader(f)
            check_columns(csv_header(reader, p), ["template", "toxicity", "phrase"], p)
            for line, row in csv_records(reader):
                label = _template_label(line, row)
                if isinstance(label, RowError):
                    out.reject(label)
                    continue
                text = row["phrase"]
                groups = {attr: found[0][2] for attr, found in generator.matches(text).items()}
                out.examples.append(Example(text, label, groups, row["template"]))
    except TextFileError as exc:
        raise FinetuneInputError(str(exc)) from None
    return out


def _template_label(line: int, row: dict[str, str | None] | csv.Error) -> int | RowError:
    """The row's toxicity as 0/1, or why the row cannot be used."""
    if isinstance(row, csv.Error):
        return RowError(line, "bad_csv", f"line {line}: {row}")
    # DictReader fills the cells a short row lacks with None.
    missing = [c for c in ("template", "toxicity", "phrase") if row.get(c) is None]
    if missing:
        return RowError(line, "missing_field", f"line {line}: no {', '.join(missing)} cell (short row)")
    if not row["phrase"].strip():
        return RowError(line, "no_text", f"line {line}: no phrase")
    try:
        label = parse_label(row["toxicity"])
    except ValueError:
        label = None
    if label is None:
        return RowError(line, "unknown_label", f"line {line}: unknown toxicity {row['toxicity']!r} "
                        "(expected toxic or nontoxic)")
    return label


def validate_examples(examples: Sequence[Example], source: str) -> list[str]:
    """The attributes with at least two groups; FinetuneInputError when the window cannot be used."""
    if not examples:
        raise FinetuneInputError(f"{source}: no labeled events (every row lacks a 0/1 label or is malformed)")
    labels = {e.label for e in examples}
    if len(labels) < 2:
        raise FinetuneInputError(f"{source}: every label is {labels.pop()}; the job needs both classes")
    seen: dict[str, set[str]] = {}
    for e in examples:
        for attr, group in e.groups.items():
            seen.setdefault(attr, set()).add(group)
    usable = sorted(a for a, gs in seen.items() if len(gs) >= 2)
    if not usable:
        found = ", ".join(f"{a}={sorted(gs)}" for a, gs in sorted(seen.items())) or "no groups at all"
        raise FinetuneInputError(f"{source}: a single group per attribute ({found}); a gap needs two groups")
    return usable


# --------------------------------------------------------------------------- splitting


def skeleton(generator: Any, example: Example) -> tuple[str, str]:
    """(template, text with every group term blanked, lower case): one sentence shape.

    The same key as ``benchmarks.biased_reference``, so that with the same seed
    and hold-out share the two hold out the same sentences.
    """
    text = example.text
    spans = [s for found in generator.matches(text).values() for s in found]
    for s, e, _ in sorted(spans, reverse=True):
        text = text[:s] + "<ID>" + text[e:]
    return example.template, text.lower()


def split_examples(
    examples: Sequence[Example], generator: Any, holdout: float, val_share: float, seed: int, min_skeletons: int = 10
) -> tuple[list[Example], list[Example], list[Example], str]:
    """(train, validation, test, how): by sentence skeleton when there are enough, else by row.

    Splitting by skeleton keeps every identity term of a sentence shape on
    one side, so the test measures new sentences, not memorised ones.
    """
    keys = [skeleton(generator, e) for e in examples]
    shapes = sorted(set(keys))
    if len(shapes) >= min_skeletons:
        how = "skeleton"
        rng = random.Random(seed)
        rng.shuffle(shapes)  # same draw as benchmarks.biased_reference
        held = set(shapes[: max(1, int(len(shapes) * holdout))])
        rest = sorted(set(shapes) - held)
        random.Random(seed + 1).shuffle(rest)
        val = set(rest[: max(1, int(len(rest) * val_share))])
        side = ["test" if k in held else "val" if k in val else "train" for k in keys]
    else:
        how = "random"
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        n_test = max(1, int(len(order) * holdout))
        n_val = max(1, int((len(order) - n_test) * val_share))
        side = [""] * len(examples)
        for rank, i in enumerate(order):
            side[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    parts: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for e, s in zip(examples, side):
        parts[s].append(e)
    return parts["train"], parts["val"], parts["test"], how


# --------------------------------------------------------------------------- loss pieces (numpy side)


def reweighing_weights(group_keys: Sequence[Any], labels: Sequence[int], clip: float = 10.0) -> np.ndarray:
    """Kamiran-Calders weights w(g, y) = P(g) P(y) / P(g, y), one per row, clipped to [1/clip, clip].

    Clipped because a (group, label) cell with a handful of rows would
    otherwise dominate a batch. Weights are normalised to mean 1 (here the raw
    0.75, 0.75, 1.5, 0.5 divided by their mean 0.875).

    >>> reweighing_weights(["a", "a", "a", "b"], [1, 1, 0, 0]).round(3).tolist()
    [0.857, 0.857, 1.714, 0.571]
    """
    keys = list(group_keys)
    y = np.asarray(labels)
    n = len(keys)
    p_g: dict[Any, float] = {}
    p_gy: dict[tuple[Any, int], float] = {}
    for k, lab in zip(keys, y.tolist()):
        p_g[k] = p_g.get(k, 0) + 1 / n
        p_gy[(k, lab)] = p_gy.get((k, lab), 0) + 1 / n
    p_y = {lab: float((y == lab).mean()) for lab in set(y.tolist())}
    w = np.array([p_g[k] * p_y[lab] / p_gy[(k, lab)] for k, lab in zip(keys, y.tolist())])
    w = np.clip(w, 1 / clip, clip)
    return w / w.mean()


def counterfactual_copy(example: Example, generator: Any, rng: random.Random) -> Example | None:
    """The text with one attribute's group terms swapped (a random variant), same label; None without terms.

    A group value equal to a swapped term follows the swap (``{"religion":
    "muslim"}`` becomes ``"jewish"``); other group values (e.g. an author's
    race from metadata) stay, since the swap does not change them.
    """
    variants = generator.variants(example.text)
    if not variants:
        return None
    attr = rng.choice(sorted(variants))
    variant = rng.choice(variants[attr])
    groups = dict(example.groups)
    for sw in variant.swaps:
        for k, v in groups.items():
            if v.strip().lower() == sw.source:
                groups[k] = sw.target
    return Example(variant.text, example.label, groups, example.template)


# --------------------------------------------------------------------------- evaluation


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def group_families(examples: Sequence[Example], attributes: Sequence[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """attribute -> (group names, per-row group code, -1 where absent), plus the pooled family ``*``.

    In ``*`` a row counts once for each group it belongs to, named ``attribute=group``.
    """
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for attr in attributes:
        names = sorted({e.groups[attr] for e in examples if attr in e.groups})
        index = {g: i for i, g in enumerate(names)}
        out[attr] = (names, np.array([index.get(e.groups.get(attr), -1) for e in examples], dtype=np.int64))
    return out


def _family_rows(codes: np.ndarray, n_groups: int, pred: np.ndarray, label: np.ndarray, score: np.ndarray) -> np.ndarray:
    return contributions(codes, pred.astype(np.int64), label.astype(np.int64), score.astype(float), n_groups)


def evaluation_summary(
    examples: Sequence[Example], scores: np.ndarray, attributes: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Accuracy, AUC, per-group rates and every gap of ``monitor.gaps.all_gaps`` with intervals, per attribute.

    ``dixon`` repeats FPED/FNED exactly as Dixon et al. (and
    ``benchmarks.biased_reference``) compute them: over every group term, the
    overall rate taken over all rows, terms or not.
    """
    label = np.array([e.label for e in examples], dtype=np.int64)
    scores = np.asarray(scores, dtype=float)
    pred = (scores >= threshold).astype(np.int64)
    out: dict[str, Any] = {
        "n": int(label.size),
        "accuracy": float((pred == label).mean()),
        "auc": _num(roc_auc(scores, label)),
        "fpr": _overall_rate(pred, label, "fpr"),
        "fnr": _overall_rate(pred, label, "fnr"),
        "attributes": {},
    }
    families = group_families(examples, attributes)
    pooled_rows, pooled_names = [], []
    for attr, (names, codes) in families.items():
        rows = _family_rows(codes, len(names), pred, label, scores)
        pooled_rows.append(rows)
        pooled_names.extend(f"{attr}={g}" for g in names)
        out["attributes"][attr] = _family_summary(rows, names)
    if pooled_rows:
        out["attributes"][ALL_GROUPS] = _family_summary(np.vstack(pooled_rows), pooled_names)
        out["dixon"] = _dixon(np.vstack(pooled_rows), pred, label)
    return out


def _family_summary(rows: np.ndarray, names: list[str]) -> dict[str, Any]:
    rates = group_rates(rows)
    groups = {}
    for i, g in enumerate(names):
        entry: dict[str, Any] = {"n": int(rows[i, 0])}
        for metric in ("fpr", "fnr", "selection_rate", "accuracy"):
            value, lower, upper = (r[i] for r in rates[metric])
            entry[metric] = {"value": _num(float(value)), "lower": _num(float(lower)), "upper": _num(float(upper))}
        groups[g] = entry
    gaps = {name: gap.as_dict(names) for name, gap in all_gaps(rows).items()}
    return {"groups": groups, "gaps": gaps}


def _overall_rate(pred: np.ndarray, label: np.ndarray, metric: str) -> float | None:
    """A rate of ``monitor.rates`` over all rows, None when undefined."""
    everyone = _family_rows(np.zeros(label.size, dtype=np.int64), 1, pred, label, np.full(label.size, np.nan))
    return _num(float(safe_ratio(*proportion(everyone, metric))[0]))


def _dixon(rows: np.ndarray, pred: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    """Sum over groups of |group rate - rate over all rows| (the overall includes rows without a group)."""
    out = {}
    for name, metric in EQUALITY_DIFFERENCES.items():
        overall = _overall_rate(pred, label, metric)
        out[name] = None if overall is None else equality_difference_value(*proportion(rows, metric), overall)
    return out


def gap_value(summary: dict[str, Any], attribute: str, metric: str) -> float | None:
    """The point value of one gap in an :func:`evaluation_summary`, None when undefined or absent."""
    try:
        return summary["attributes"][attribute]["gaps"][metric]["value"]
    except (KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- gates


@dataclass(frozen=True)
class Gates:
    """Promotion gates: accuracy may drop at most ``max_accuracy_drop``; the gap must shrink by ``min_gap_reduction``."""

    max_accuracy_drop: float = 0.02
    min_gap_reduction: float = 0.5  # 0.5: the gap at least halved
    metric: str = "fped"
    attribute: str = ALL_GROUPS


def decide_promotion(before: dict[str, Any], after: dict[str, Any], gates: Gates) -> dict[str, Any]:
    """Whether the candidate may be offered for promotion, with the reasons; a pure function of two summaries.

    Gates use point estimates on the held-out split; the report carries the
    intervals beside them for the human who decides.

    >>> s = lambda acc, gap: {"accuracy": acc, "attributes": {"*": {"gaps": {"fped": {"value": gap}}}}}
    >>> decide_promotion(s(0.90, 0.40), s(0.89, 0.10), Gates())["promote"]
    True
    >>> decide_promotion(s(0.90, 0.40), s(0.85, 0.10), Gates())["reasons"]
    ['accuracy dropped 0.0500 > 0.0200']
    """
    reasons = []
    acc_drop = float(before["accuracy"]) - float(after["accuracy"])
    if acc_drop > gates.max_accuracy_drop + 1e-12:
        reasons.append(f"accuracy dropped {acc_drop:.4f} > {gates.max_accuracy_drop:.4f}")
    gap_before = gap_value(before, gates.attribute, gates.metric)
    gap_after = gap_value(after, gates.attribute, gates.metric)
    reduction = None
    if gap_before is None or gap_after is None:
        reasons.append(f"{gates.metric} on {gates.attribute!r} is undefined before or after")
    elif gap_before <= 0:
        reasons.append(f"{gates.metric} on {gates.attribute!r} was already 0: nothing to reduce")
    else:
        # Ratio gaps (1 = parity) shrink towards 1, differences towards 0.
        ideal = 1.0 if gates.metric.endswith("_ratio") else 0.0
        reduction = 1 - abs(gap_after - ideal) / abs(gap_before - ideal) if gap_before != ideal else None
        if reduction is None or reduction < gates.min_gap_reduction - 1e-12:
            reasons.append(
                f"{gates.metric} on {gates.attribute!r} reduced by {0 if reduction is None else reduction:.1%} "
                f"< {gates.min_gap_reduction:.0%} ({gap_before:.4f} -> {gap_after:.4f})"
            )
    return {
        "promote": not reasons,
        "reasons": reasons,
        "gates": asdict(gates),
        "accuracy_drop": acc_drop,
        "gap_before": gap_before,
        "gap_after": gap_after,
        "gap_reduction": reduction,
        "note": "a passing candidate is only proposed: promotion is a human command; the serving model is untouched",
    }


# --------------------------------------------------------------------------- training


@dataclass
class FinetuneConfig:
    """Everything the job needs; the CLI fills it from flags."""

    model_dir: str
    out: str
    report: str | None = None  # default: OUT/report.json
    attributes: list[str] | None = None  # lexicon attributes for counterfactuals (default: all shipped)
    device: str | None = None
    epochs: float = 2.0
    max_steps: int | None = None
    max_seconds: float | None = None  # training time budget (the run still evaluates and reports)
    batch_size: int = 64
    eval_batch_size: int = 512
    lr: float = 2e-5
    adversary_lr: float = 1e-3
    weight_decay: float = 0.01
    max_length: int = 64
    gamma: float = 2.0  # weight of the soft gap penalty
    delta: float = 0.1  # weight of the adversary loss (reversed into the encoder)
    counterfactual: bool = True
    reweigh: bool = True
    holdout: float = 0.25
    val_share: float = 0.1
    eval_every: int | None = None  # steps between validation checks (default: a quarter epoch)
    patience: int = 4  # validation checks without improvement before stopping
    max_accuracy_drop: float = 0.02
    min_gap_reduction: float = 0.5
    gate_metric: str = "fped"
    gate_attribute: str = ALL_GROUPS
    threshold: float = 0.5
    seed: int = 0
    max_rows: int | None = None  # seeded sample of the window (smoke runs)
    progress: bool = True


# FinetuneConfig field -> (flag, lowest, highest, bounds included, integer, may be None). nan and inf fail every
# range: a nan learning rate trains a model of nan weights, a nan epoch count cannot be turned into steps.
CONFIG_RANGES: dict[str, tuple[str, float, float, bool, bool, bool]] = {
    "epochs": ("--epochs", 0, math.inf, False, False, False),
    "max_steps": ("--max-steps", 1, math.inf, True, True, True),
    "max_seconds": ("--max-seconds", 0, math.inf, False, False, True),
    "batch_size": ("--batch-size", 1, math.inf, True, True, False),
    "eval_batch_size": ("eval_batch_size", 1, math.inf, True, True, False),
    "lr": ("--lr", 0, math.inf, False, False, False),
    "adversary_lr": ("adversary_lr", 0, math.inf, False, False, False),
    "weight_decay": ("weight_decay", 0, math.inf, True, False, False),
    "max_length": ("--max-length", 1, math.inf, True, True, False),
    "gamma": ("--gamma", 0, math.inf, True, False, False),
    "delta": ("--delta", 0, math.inf, True, False, False),
    "holdout": ("--holdout", 0, 1, False, False, False),
    "val_share": ("--val-share", 0, 1, False, False, False),
    "eval_every": ("--eval-every", 1, math.inf, True, True, True),
    "patience": ("--patience", 1, math.inf, True, True, False),
    "max_accuracy_drop": ("--max-accuracy-drop", 0, 1, True, False, False),
    "min_gap_reduction": ("--min-gap-reduction", 0, 1, True, False, False),
    "threshold": ("threshold", 0, 1, True, False, False),
    "seed": ("--seed", 0, 2**32 - 1, True, True, False),  # numpy's seed range
    "max_rows": ("--max-rows", 1, math.inf, True, True, True),
}


def check_config(cfg: FinetuneConfig) -> None:
    """FinetuneInputError naming the first setting out of its range (library callers skip the CLI's flag types)."""
    for name, (flag, low, high, closed, integer, optional) in CONFIG_RANGES.items():
        value = getattr(cfg, name)
        if value is None and optional:
            continue
        if integer and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise FinetuneInputError(f"{flag} must be a whole number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise FinetuneInputError(f"{flag} must be a number, got {value!r}")
        inside = low <= value <= high if closed else low < value < high
        if not (math.isfinite(value) and inside):
            bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
            raise FinetuneInputError(f"{flag} must lie in {bounds.replace('inf', 'infinity')}, got {value!r}")


class _GradientReversal:
    """Identity forward, gradient times -alpha backward (Ganin & Lempitsky 2015), built lazily on torch."""

    fn: Any = None

    @classmethod
    def apply(cls, x: Any, alpha: float) -> Any:
        if cls.fn is None:
            import torch

            class Reverse(torch.autograd.Function):
                @staticmethod
                def forward(ctx: Any, inp: Any, a: float) -> Any:
                    ctx.alpha = a
                    return inp.view_as(inp)

                @staticmethod
                def backward(ctx: Any, grad: Any) -> Any:
                    return -ctx.alpha * grad, None

            cls.fn = Reverse
        return cls.fn.apply(x, alpha)


def _load(model_dir: str, device: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise FinetuneInputError(f"model directory {model_dir!r} not found or has no config.json")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        # fp32 master weights: bf16 autocast on the GPU, but the optimizer steps in fp32.
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise FinetuneInputError(f"cannot load model from {model_dir!r}: {str(exc).splitlines()[0]}") from exc
    if int(model.config.num_labels) != 2:
        raise FinetuneInputError(f"{model_dir!r}: a 2-label classifier is needed, found {model.config.num_labels} labels")
    return model.to(device), tok


def _score(model: Any, tok: Any, texts: Sequence[str], device: Any, batch_size: int, max_length: int) -> np.ndarray:
    """Positive-class probability of each text, in fp32, longest-first batches to waste little padding."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.empty(len(texts), dtype=np.float64)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
            prob = model(**enc).logits.float().softmax(-1)[:, 1]
            out[idx] = prob.cpu().numpy()
    model.train(was_training)
    return out


def _soft_gap_penalty(prob: Any, labels: Any, codes: Any, n_groups: int) -> Any:
    """Sum over groups of (group mean - batch mean)^2 of the positive probability, among negatives and positives.

    Among negatives it is a differentiable FPED, among positives a TPR/FNR one.
    """
    import torch

    total = prob.new_zeros(())
    for y in (0, 1):
        mask = (labels == y) & (codes >= 0)
        if int(mask.sum()) < 2:
            continue
        p, c = prob[mask], codes[mask]
        sums = torch.zeros(n_groups, device=prob.device, dtype=prob.dtype).index_add_(0, c, p)
        counts = torch.zeros(n_groups, device=prob.device, dtype=prob.dtype).index_add_(0, c, torch.ones_like(p))
        present = counts > 0
        if int(present.sum()) < 2:
            continue
        means = sums[present] / counts[present]
        total = total + ((means - p.mean()) ** 2).sum()
    return total


def run_finetune(cfg: FinetuneConfig, examples: Sequence[Example], source: str, read_stats: dict[str, int] | None = None,
                 templates_mode: bool = False) -> dict[str, Any]:
    """Train a candidate on ``examples``; write OUT/model and the JSON report; return the report."""
    import torch
    from tqdm.auto import tqdm

    from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon
    from fairwatch.monitor.scorer.model import ModelLoadError, choose_device

    check_config(cfg)
    out_dir = Path(cfg.out)
    model_path = Path(cfg.model_dir)
    if model_path.resolve() == out_dir.resolve() or model_path.resolve().is_relative_to(out_dir.resolve()) \
            or out_dir.resolve().is_relative_to(model_path.resolve()):
        raise FinetuneInputError("--out must be apart from the model directory: the job never writes over the serving model")
    lexicon = Lexicon.default()
    if cfg.attributes:
        try:
            lexicon = lexicon.select(cfg.attributes)
        except ValueError as exc:
            raise FinetuneInputError(str(exc)) from exc
    generator = CounterfactualGenerator(lexicon)

    examples = list(examples)
    if cfg.max_rows and len(examples) > cfg.max_rows:
        examples = random.Random(cfg.seed).sample(examples, cfg.max_rows)
    attributes = validate_examples(examples, source)
    try:
        device = choose_device(cfg.device)
    except ModelLoadError as exc:
        raise FinetuneInputError(str(exc)) from exc
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tok = _load(cfg.model_dir, device)

    train, val, test, split_how = split_examples(examples, generator, cfg.holdout, cfg.val_share, cfg.seed)
    if not train or not val or not test:
        raise FinetuneInputError(f"{source}: too few rows to split into train/validation/test ({len(examples)} rows)")
    if len({e.label for e in train}) < 2:
        raise FinetuneInputError(f"{source}: the training split holds a single label")
    gates = Gates(cfg.max_accuracy_drop, cfg.min_gap_reduction, cfg.gate_metric, cfg.gate_attribute)
    t_start = time.perf_counter()
    print(f"finetune: {len(examples)} labeled rows from {source}; split by {split_how}: "
          f"train {len(train)}, validation {len(val)}, test {len(test)}; attributes {attributes}; device {device}", flush=True)

    score = lambda rows: _score(model, tok, [e.text for e in rows], device, cfg.eval_batch_size, cfg.max_length)  # noqa: E731
    before_test = evaluation_summary(test, score(test), attributes, cfg.threshold)
    before_val = evaluation_summary(val, score(val), attributes, cfg.threshold)
    print(f"before: test accuracy {before_test['accuracy']:.4f} AUC {before_test['auc']}  "
          f"{gates.metric}[{gates.attribute}] {gap_value(before_test, gates.attribute, gates.metric)}", flush=True)

    # Group codes per attribute over the training rows and their counterfactual copies.
    fam_names = {a: sorted({e.groups[a] for e in train if a in e.groups} | set(lexicon.attributes[a].all_terms
                           if a in lexicon.attributes else ())) for a in attributes}
    fam_index = {a: {g: i for i, g in enumerate(names)} for a, names in fam_names.items()}

    hidden = int(getattr(model.config, "hidden_size", 0) or getattr(model.config, "dim", 0))
    adversaries = torch.nn.ModuleDict({
        a: torch.nn.Sequential(torch.nn.Linear(hidden + 2, 64), torch.nn.ReLU(), torch.nn.Linear(64, len(fam_names[a])))
        for a in attributes
    }).to(device)
    optimizer = torch.optim.AdamW([
        {"params": model.parameters(), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": adversaries.parameters(), "lr": cfg.adversary_lr, "weight_decay": 0.0},
    ])
    aug_rng = random.Random(cfg.seed + 2)

    def epoch_rows() -> list[Example]:
        rows = list(train)
        if cfg.counterfactual:
            rows += [c for c in (counterfactual_copy(e, generator, aug_rng) for e in train) if c is not None]
        aug_rng.shuffle(rows)
        return rows

    rows = epoch_rows()
    steps_per_epoch = max(1, math.ceil(len(rows) / cfg.batch_size))
    total_steps = cfg.max_steps or max(1, int(steps_per_epoch * cfg.epochs))
    eval_every = cfg.eval_every or max(10, steps_per_epoch // 4)
    warmup = max(1, total_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / total_steps))

    def selection_key(summary: dict[str, Any]) -> tuple:
        # Among checkpoints that keep validation accuracy, the smallest gate gap wins; before any does, accuracy.
        gap = gap_value(summary, gates.attribute, gates.metric)
        gap = float("inf") if gap is None else abs(gap - (1.0 if gates.metric.endswith("_ratio") else 0.0))
        keeps = summary["accuracy"] >= before_val["accuracy"] - gates.max_accuracy_drop
        return (1, -gap, summary["accuracy"]) if keeps else (0, summary["accuracy"], -gap)

    best_key, best_step = selection_key(before_val), 0
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    history = [{"step": 0, "val_accuracy": before_val["accuracy"],
                "val_gate": gap_value(before_val, gates.attribute, gates.metric)}]
    stale, step, epoch, stopped = 0, 0, 0, "steps"
    use_autocast = device.type == "cuda"
    model.train()
    bar = tqdm(total=total_steps, desc="finetune", unit="step", disable=not cfg.progress, mininterval=2.0)
    t_train = time.perf_counter()
    while step < total_steps and stopped == "steps":
        if epoch > 0:
            rows = epoch_rows()
        weights = reweighing_weights([tuple(sorted(e.groups.items())) for e in rows], [e.label for e in rows]) \
            if cfg.reweigh else np.ones(len(rows))
        for b in range(0, len(rows), cfg.batch_size):
            batch = rows[b : b + cfg.batch_size]
            enc = tok([e.text for e in batch], padding=True, truncation=True, max_length=cfg.max_length,
                      return_tensors="pt").to(device)
            labels = torch.tensor([e.label for e in batch], device=device)
            w = torch.tensor(weights[b : b + cfg.batch_size], device=device, dtype=torch.float32)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                out = model(**enc, output_hidden_states=True)
            logits = out.logits.float()
            ce = (torch.nn.functional.cross_entropy(logits, labels, reduction="none") * w).sum() / w.sum()
            prob = logits.softmax(-1)[:, 1]
            # The adversary sees the [CLS] representation and the label: it can then only profit from group
            # information beyond what the label explains, which is what equalized odds forbids (Zhang et al. 2018).
            rep = torch.cat([out.hidden_states[-1][:, 0].float(),
                             torch.nn.functional.one_hot(labels, 2).float()], dim=1)
            rep = _GradientReversal.apply(rep, 1.0)
            penalty, adv = logits.new_zeros(()), logits.new_zeros(())
            for a in attributes:
                codes = torch.tensor([fam_index[a].get(e.groups.get(a), -1) for e in batch], device=device)
                if cfg.gamma:
                    penalty = penalty + _soft_gap_penalty(prob, labels, codes, len(fam_names[a]))
                if cfg.delta and int((codes >= 0).sum()):
                    adv = adv + torch.nn.functional.cross_entropy(adversaries[a](rep), codes, ignore_index=-1)
            loss = ce + cfg.gamma * penalty / len(attributes) + cfg.delta * adv / len(attributes)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", ce=f"{ce.item():.3f}", pen=f"{penalty.item():.4f}",
                            adv=f"{adv.item():.3f}", refresh=False)
            over_time = cfg.max_seconds is not None and time.perf_counter() - t_train > cfg.max_seconds
            if step % eval_every == 0 or step == total_steps or over_time:
                summary = evaluation_summary(val, score(val), attributes, cfg.threshold)
                key = selection_key(summary)
                history.append({"step": step, "val_accuracy": summary["accuracy"],
                                "val_gate": gap_value(summary, gates.attribute, gates.metric)})
                bar.write(f"step {step}: validation accuracy {summary['accuracy']:.4f} "
                          f"{gates.metric}[{gates.attribute}] {history[-1]['val_gate']}")
                if key > best_key:
                    best_key, best_step, stale = key, step, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        stopped = "early_stopping"
                        break
            if step >= total_steps:
                break
            if over_time:
                stopped = "max_seconds"
                break
        epoch += 1
    bar.close()
    train_seconds = time.perf_counter() - t_train
    model.load_state_dict(best_state)
    model.eval()
    # The last guard: whatever made training diverge (a huge learning rate, an overflow), a model of nan or
    # inf weights must not become a candidate that a human might promote.
    # Parameters only: a buffer may hold -inf on purpose (an attention mask).
    broken = [k for k, v in model.named_parameters() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        what = (f"{len(broken)} of {len(list(model.parameters()))} weight tensors", f"(first {broken[0]!r})")
        if best_step == 0:
            raise FinetuneDivergedError(f"the model directory's own weights are not finite: {what[0]} {what[1]}; "
                                        f"no candidate written to {out_dir}")
        raise FinetuneDivergedError(f"training diverged: {what[0]} of the best checkpoint (step {best_step}) are not "
                                    f"finite {what[1]}; no candidate written to {out_dir} (try a smaller --lr than {cfg.lr:g})")
    after_test = evaluation_summary(test, score(test), attributes, cfg.threshold)
    decision = decide_promotion(before_test, after_test, gates)

    candidate = out_dir / "model"
    candidate.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(candidate)
    tok.save_pretrained(candidate)
    per_group = {
        attr: {g: {"n": v["n"], "fpr_before": v["fpr"]["value"], "fpr_after": after_test["attributes"][attr]["groups"][g]["fpr"]["value"],
                   "fnr_before": v["fnr"]["value"], "fnr_after": after_test["attributes"][attr]["groups"][g]["fnr"]["value"]}
               for g, v in before_test["attributes"][attr]["groups"].items()}
        for attr in attributes
    }
    report = {
        "job": "fairwatch finetune",
        "model_dir": str(model_path),
        "candidate_dir": str(candidate),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "data": {"source": source, "templates": templates_mode, "rows": len(examples), **(read_stats or {}),
                 "split": split_how, "train": len(train), "validation": len(val), "test": len(test),
                 "rows_per_epoch_with_counterfactuals": len(rows), "attributes": attributes},
        "config": asdict(cfg),
        "training": {"steps": step, "epochs_started": epoch, "stopped": stopped, "best_step": best_step,
                     "train_seconds": train_seconds, "total_seconds": time.perf_counter() - t_start,
                     "history": history},
        "before": before_test,
        "after": after_test,
        "per_group_rates": per_group,
        "decision": decision,
    }
    report_path = Path(cfg.report) if cfg.report else out_dir / "report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(_finite(report), indent=1, allow_nan=False))
    print(f"after: test accuracy {after_test['accuracy']:.4f} AUC {after_test['auc']}  "
          f"{gates.metric}[{gates.attribute}] {decision['gap_before']} -> {decision['gap_after']}  "
          f"promote: {decision['promote']} {decision['reasons']}", flush=True)
    print(f"wrote {candidate} and {report_path}", flush=True)
    return report


def _finite(x: Any) -> Any:
    """``x`` with every NaN/inf float turned into None, so the report is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
