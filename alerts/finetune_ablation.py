"""The fine-tune's ablation: plain fine-tuning on the window against the full recipe, in one report.

The full recipe adds Kamiran-Calders reweighing, the soft gap penalty, the
adversary and counterfactual copies to plain cross-entropy fine-tuning. On
easy windows with correct labels, plain fine-tuning may explain most of the
fix; this runs both from the same serving model, on the same split (the
split is seeded), with the same steps, learning rate and checkpoint
selection, so that the report shows what the extra parts buy. The candidate
the trigger sees is the full recipe's (OUT/model); the plain run writes its
own under OUT/ablation-plain/ and is never a candidate.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from fairwatch.alerts.finetune import Example, FinetuneConfig, _finite, gap_value, run_finetune
from fairwatch.monitor.rates import wilson_interval

PLAIN_DIR = "ablation-plain"
# Gaps reported per variant; the gate's own metric is added when it is another one.
ABLATION_GAPS = ("fped", "fned", "equalized_odds_difference", "demographic_parity_difference",
                 "false_positive_rate_difference", "false_negative_rate_difference")


def plain_config(cfg: FinetuneConfig) -> FinetuneConfig:
    """The same job without any of the recipe's fairness parts."""
    out = Path(cfg.out) / PLAIN_DIR
    return replace(cfg, out=str(out), report=str(out / "report.json"), gamma=0.0, delta=0.0, counterfactual=False,
                   reweigh=False)


def accuracy_interval(summary: dict[str, Any]) -> list[float] | None:
    """Wilson 95% interval of the held-out accuracy (n rows)."""
    n, accuracy = summary.get("n"), summary.get("accuracy")
    if not n or accuracy is None:
        return None
    lower, upper = wilson_interval(round(accuracy * n), n)
    return [float(lower), float(upper)]


def variant_summary(report: dict[str, Any], attribute: str) -> dict[str, Any]:
    """Accuracy, AUC and the gaps with their intervals, after training, on the held-out split."""
    after = report["after"]
    gaps = (after.get("attributes", {}).get(attribute) or {}).get("gaps", {})
    cfg = report["config"]
    names = list(dict.fromkeys([*ABLATION_GAPS, cfg["gate_metric"]]))
    return {
        "recipe": {"reweigh": cfg["reweigh"], "gap_penalty": cfg["gamma"], "adversary": cfg["delta"],
                   "counterfactual_copies": cfg["counterfactual"]},
        "accuracy": after.get("accuracy"), "accuracy_interval": accuracy_interval(after),
        "auc": after.get("auc"),
        "gaps": {name: gaps[name] for name in names if name in gaps},
        "gate_gap": gap_value(after, cfg["gate_attribute"], cfg["gate_metric"]),
        "promote": report["decision"]["promote"], "reasons": report["decision"]["reasons"],
        "training": {k: report["training"][k] for k in ("steps", "stopped", "best_step", "train_seconds")},
    }


def run_ablation(cfg: FinetuneConfig, examples: Sequence[Example], source: str,
                 read_stats: dict[str, int] | None = None, templates_mode: bool = False) -> dict[str, Any]:
    """Run plain fine-tuning, then the full recipe; return the full recipe's report with ``ablation`` added."""
    plain = run_finetune(plain_config(cfg), examples, source, read_stats, templates_mode)
    full = run_finetune(cfg, examples, source, read_stats, templates_mode)
    attribute = cfg.gate_attribute
    before = full["before"]
    before_gaps = (before.get("attributes", {}).get(attribute) or {}).get("gaps", {})
    full["ablation"] = {
        "attribute": attribute,
        "same": "serving model, seeded split, steps, learning rate, checkpoint selection and held-out test",
        "before": {"accuracy": before.get("accuracy"), "accuracy_interval": accuracy_interval(before),
                   "auc": before.get("auc"),
                   "gaps": {n: before_gaps[n] for n in ABLATION_GAPS if n in before_gaps},
                   "gate_gap": gap_value(before, attribute, cfg.gate_metric)},
        "plain": variant_summary(plain, attribute),
        "full": variant_summary(full, attribute),
        "plain_report": str(Path(plain_config(cfg).report)),
    }
    report_path = Path(cfg.report) if cfg.report else Path(cfg.out) / "report.json"
    report_path.write_text(json.dumps(_finite(full), indent=1, allow_nan=False))
    a = full["ablation"]
    print(f"ablation ({cfg.gate_metric}[{attribute}] on held-out data): before {a['before']['gate_gap']}, "
          f"plain fine-tuning {a['plain']['gate_gap']} (accuracy {a['plain']['accuracy']}), "
          f"full recipe {a['full']['gate_gap']} (accuracy {a['full']['accuracy']})", flush=True)
    return full
