"""Load a Hugging Face sequence classifier from a local directory and turn logits into scores."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairwatch.monitor.errors import FairwatchError

if TYPE_CHECKING:  # torch stays optional for `import monitor`
    import torch

__all__ = ["LoadedClassifier", "ModelLoadError", "choose_device", "load_classifier", "positive_scores"]


class ModelLoadError(FairwatchError, RuntimeError):
    """The model directory is missing or unreadable."""


@dataclass
class LoadedClassifier:
    model: Any  # transformers PreTrainedModel, in eval mode on `device`
    tokenizer: Any  # transformers fast tokenizer
    device: "torch.device"
    dtype: "torch.dtype"
    num_labels: int
    model_dir: str


def choose_device(device: str | None = None) -> "torch.device":
    """``device`` if given ("cpu", "cuda", "cuda:1"), else CUDA when available, else CPU."""
    import torch

    if device:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            dev = None
        # torch also names devices (meta, mps, xpu, ...) that the scorer's batching knows nothing of.
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise ModelLoadError(f"device {device!r} is not one of cpu, cuda, cuda:N")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} asked for but CUDA is not available")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r} asked for but there are {torch.cuda.device_count()} CUDA device(s)")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_classifier(
    model_dir: str | Path,
    device: str | None = None,
    dtype: "torch.dtype | str | None" = None,
) -> LoadedClassifier:
    """Load tokenizer and classifier from ``model_dir`` (never from a hub).

    bf16 on GPU, fp32 on CPU unless ``dtype`` says otherwise. A directory
    holding a bare encoder (e.g. MiniLM's ``BertModel``) loads with a new,
    randomly initialised 2-label head, as transformers does.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelLoadError(f"model directory {str(model_dir)!r} not found or has no config.json")
    dev = choose_device(device)
    if isinstance(dtype, str):
        dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                 "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load model from {str(model_dir)!r}: {str(exc).splitlines()[0]}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{str(model_dir)!r}: a fast (Rust) tokenizer is required (tokenizer.json)")
    model.to(dev).eval()
    return LoadedClassifier(model, tokenizer, dev, dtype, int(model.config.num_labels), str(path))


def positive_scores(logits: "torch.Tensor") -> "torch.Tensor":
    """Probability of the positive class, in fp32: sigmoid for 1 logit, softmax's last column otherwise."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        return logits[..., 0].sigmoid()
    return logits.softmax(dim=-1)[..., -1]


