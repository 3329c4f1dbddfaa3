"""Faster CPU runtimes for the scorer's classifier: ONNX Runtime, in fp32 or with dynamic int8 weights.

``cpu_runtime="torch"`` (the default) runs the transformers model as loaded.
``"onnx"`` exports it once at start (torch's TorchScript-based exporter) and
runs it on ONNX Runtime's CPU provider: the same arithmetic, scores equal
within float rounding. ``"onnx-int8"`` also quantizes the weights of every
MatMul to int8 (activations quantized per batch at run time), which changes
scores slightly and is the fast one: on two shared cores 2.9 times the torch
path's rate end to end, 4.3 times model-only (docs/scorer.md has the runs).
torch's own ``quantize_dynamic`` was measured too and gained far less here
(docs/scorer.md), so it is not offered.

onnxruntime and onnx are optional (the ``onnx`` extra) and imported only when
a non-torch runtime is asked for.

>>> check_cpu_runtime("onnx-int8", "cpu")
>>> check_cpu_runtime("tensorrt", "cpu")
Traceback (most recent call last):
...
fairwatch.monitor.scorer.cpu_runtime.CpuRuntimeError: unknown CPU runtime 'tensorrt': choose one of torch, onnx, onnx-int8
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fairwatch.monitor.scorer.model import ModelLoadError

__all__ = ["CPU_RUNTIMES", "CpuRuntimeError", "OnnxClassifier", "check_cpu_runtime", "runtime_model"]

CPU_RUNTIMES = ("torch", "onnx", "onnx-int8")
ONNX_OPSET = 17  # LayerNormalization is a single op from 17 on; onnxruntime 1.20+ runs it


class CpuRuntimeError(ModelLoadError):
    """The CPU runtime asked for is unknown, not installed, or cannot run this model (one line)."""


def check_cpu_runtime(name: str, device_type: str | None = None) -> None:
    """Raise :class:`CpuRuntimeError` unless ``name`` is a runtime that can run on ``device_type`` (if given)."""
    if name not in CPU_RUNTIMES:
        raise CpuRuntimeError(f"unknown CPU runtime {name!r}: choose one of {', '.join(CPU_RUNTIMES)}")
    if name != "torch" and device_type is not None and device_type != "cpu":
        raise CpuRuntimeError(f"CPU runtime {name!r} runs on the CPU only, not on {device_type!r}: "
                              "drop it or score with device='cpu'")


def runtime_model(loaded: Any, cpu_runtime: str = "torch") -> Any:
    """What the scorer calls as ``model(input_ids=..., attention_mask=...).logits`` for ``cpu_runtime``."""
    check_cpu_runtime(cpu_runtime, loaded.device.type)
    if cpu_runtime == "torch":
        return loaded.model
    return OnnxClassifier.from_loaded(loaded, quantize_int8=cpu_runtime == "onnx-int8")


def _import_onnxruntime(runtime: str) -> Any:
    try:
        import onnx  # noqa: F401 - the exporter and the quantizer need it
        import onnxruntime
    except ImportError as exc:
        raise CpuRuntimeError(f"CPU runtime {runtime!r} needs the 'onnx' extra (pip install 'fairwatch[onnx]'): "
                              f"{exc}") from None
    return onnxruntime


class OnnxClassifier:
    """An ONNX Runtime session that answers like the transformers classifier it was exported from."""

    def __init__(self, session: Any, runtime: str) -> None:
        self.session = session
        self.runtime = runtime  # "onnx" or "onnx-int8", for reports
        self._input_names = {i.name for i in session.get_inputs()}

    @classmethod
    def from_loaded(cls, loaded: Any, quantize_int8: bool = False) -> OnnxClassifier:
        """Export ``loaded.model`` (fp32, on CPU) and open it on ONNX Runtime's CPU provider."""
        import torch

        runtime = "onnx-int8" if quantize_int8 else "onnx"
        ort = _import_onnxruntime(runtime)
        if loaded.dtype != torch.float32:
            raise CpuRuntimeError(f"CPU runtime {runtime!r} exports fp32 models; this one is {loaded.dtype}")
        with tempfile.TemporaryDirectory(prefix="fairwatch-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            _export(loaded.model, path)
            if quantize_int8:
                path = _quantize_int8(path)
            options = ort.SessionOptions()
            # as many threads as torch would use, so the two paths compare on the same cores
            options.intra_op_num_threads = torch.get_num_threads()
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own types; the CLI needs one line
                raise CpuRuntimeError(f"ONNX Runtime cannot load the exported model: {str(exc).splitlines()[0]}") \
                    from exc
        return cls(session, runtime)

    def __call__(self, input_ids: Any, attention_mask: Any) -> SimpleNamespace:
        import torch

        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        (logits,) = self.session.run(["logits"], {k: v for k, v in feed.items() if k in self._input_names})
        return SimpleNamespace(logits=torch.from_numpy(logits))


def _export(model: Any, path: Path) -> None:
    import torch

    example = torch.ones((2, 8), dtype=torch.int64)
    # One padded row: with an all-ones mask transformers skips masking while tracing, and the graph would
    # then attend to padding at run time.
    example_mask = example.clone()
    example_mask[1, 5:] = 0
    dynamic = {0: "batch", 1: "tokens"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The tracer warns about every shape-dependent Python branch in transformers; the dynamic axes
            # below are checked by the tests at other batch sizes and lengths than the example's.
            warnings.simplefilter("ignore")
            # dynamo=False: the TorchScript exporter needs only the onnx package; the dynamo one more.
            torch.onnx.export(
                model, (example, example_mask), str(path), input_names=["input_ids", "attention_mask"],
                output_names=["logits"], opset_version=ONNX_OPSET, dynamo=False,
                dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "logits": {0: "batch"}},
            )
    except Exception as exc:  # the exporter's failures come in many types; the CLI needs one line
        raise CpuRuntimeError(f"cannot export the model to ONNX: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _quantize_int8(path: Path) -> Path:
    """Dynamic int8 quantization (weights int8 ahead of time, activations per batch) of ``path``'s MatMuls."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name("model-int8.onnx")
    # it logs a suggestion to run its pre-processing (shape inference for static quantization) on every call
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().setLevel(quiet)
    return out
