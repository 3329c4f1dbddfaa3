"""The classifier under ``torch.compile``, for the rate of short texts on a GPU; eager wherever it is not proven equal.

At the lengths fairwatch scores (templates of 8-14 tokens) a GPU spends most of a
forward pass launching small kernels. Compiled with ``mode="reduce-overhead"``
(inductor's fused kernels, replayed as CUDA graphs) the same forward ran 1.48x
eager on an H200 (docs/scorer.md). A CUDA graph holds one shape, so the scorer
keeps shapes few: rows come in power-of-two buckets (:func:`row_pieces`,
:func:`row_bucket`) and widths in multiples of 8 (``pad_flat``).

Trust is earned per shape: the first batch of each new shape runs both compiled
(on a GPU: the recorded CUDA graph, not its warm-up) and eager, and the scores
must agree within ``tolerance`` (the rounding of the model's dtype). If they do
not, or compiling, recording or replaying fails (no compiler, an unsupported
architecture, out of memory), the scorer logs one line and stays eager from
then on: never a wrong score, at worst the eager rate. CUDA graphs are kept per
thread, so a shape is checked again on each thread that scores it.

On a CPU, inductor compiles C++ kernels (a C++ compiler is needed); there are no
CUDA graphs there.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from fairwatch.monitor.errors import first_line

log = logging.getLogger("fairwatch.scorer")

__all__ = ["CompiledClassifier", "row_bucket", "row_pieces", "SMALLEST_BUCKET"]

SMALLEST_BUCKET = 8
# A piece whose bucket holds at most this share of padding rows is run whole; else it is split.
MAX_PADDING_SHARE = 1 / 8
# Up to this many rows a piece is run whole, padded up to its bucket: splitting would cost launches, not compute.
WHOLE_UP_TO = 64
# Shapes compiled and checked at most: widths 8 to 64 by 8 x 12 row buckets x mask or none is 192.
MAX_SHAPES = 256


def row_bucket(rows: int) -> int:
    """The rows a batch of ``rows`` is padded to: the next power of two, at least :data:`SMALLEST_BUCKET`.

    >>> [row_bucket(n) for n in (1, 8, 9, 1000, 1024, 1025)]
    [8, 8, 16, 1024, 1024, 2048]
    """
    return max(SMALLEST_BUCKET, 1 << (max(rows, 1) - 1).bit_length())


def row_pieces(rows: int) -> list[int]:
    """Cut ``rows`` into pieces that pad little to their buckets: powers of two, largest first, then one last
    piece run whole (at most 1/8 of its bucket padding, or at most 64 rows).

    >>> row_pieces(32768), row_pieces(32000), row_pieces(17000)
    ([32768], [32000], [16384, 512, 64, 40])
    >>> sum(row_pieces(12345)) == 12345
    True
    """
    pieces = []
    while rows > 0:
        bucket = row_bucket(rows)
        if bucket - rows <= rows * MAX_PADDING_SHARE or rows <= WHOLE_UP_TO:
            pieces.append(rows)
            break
        pieces.append(bucket // 2)
        rows -= bucket // 2
    return pieces


class CompiledClassifier:
    """``model`` under ``torch.compile``, called as ``logits(input_ids, attention_mask)``.

    ``score_fn`` turns logits into the scores compared on each new shape; ``tolerance`` bounds their
    difference. ``disabled`` says why it fell back to eager (None while compiled scores are in use);
    ``shapes`` are the shapes checked so far, ``largest_difference`` the largest score difference seen in
    those checks. Past ``max_shapes`` shapes, new ones run eager (compiling and recording each costs seconds).
    """

    def __init__(self, model: Any, device_type: str, score_fn: Callable[[Any], Any], tolerance: float,
                 max_shapes: int = MAX_SHAPES) -> None:
        import torch

        self._torch = torch
        self.model = model
        self._cuda = device_type == "cuda"
        self._score_fn = score_fn
        self.tolerance = float(tolerance)
        self.max_shapes = max_shapes
        self._checked: set[tuple] = set()  # (thread, shape): CUDA graphs are recorded per thread
        self.largest_difference = 0.0
        self.disabled: str | None = None
        self._compiled: Any = None
        try:
            # dynamic: one compilation serves every shape (each still gets its own CUDA graph on a GPU).
            self._compiled = torch.compile(model, mode="reduce-overhead" if self._cuda else None, dynamic=True)
        except Exception as exc:  # noqa: BLE001 - torch.compile itself refusing the model: stay eager
            self._disable(f"torch.compile refused the model ({first_line(exc)})")

    @property
    def active(self) -> bool:
        return self.disabled is None

    @property
    def shapes(self) -> set[tuple]:
        """((rows, width), mask shape and dtype or None) of every shape checked, on any thread."""
        return {shape for _thread, shape in self._checked}

    def logits(self, input_ids: Any, attention_mask: Any) -> Any:
        """The model's logits for this batch: compiled once this shape agreed with eager, else eager."""
        if self.disabled is not None:
            return self._eager(input_ids, attention_mask)
        shape = (tuple(input_ids.shape), None if attention_mask is None else
                 (tuple(attention_mask.shape), attention_mask.dtype))
        key = (threading.get_ident(), shape)
        known = key in self._checked
        if not known and len(self._checked) >= self.max_shapes:
            return self._eager(input_ids, attention_mask)
        try:
            compiled = self._run_compiled(input_ids, attention_mask)
            if not known and self._cuda:
                # The first call of a shape under CUDA graphs is a warm-up without a graph; the graph is recorded
                # at the second. Check that one: it is what every later call replays.
                compiled = self._run_compiled(input_ids, attention_mask)
        except Exception as exc:  # noqa: BLE001 - compiling, recording or replaying: any failure, eager for good
            self._disable(f"{'running' if known else 'compiling for'} {_describe(shape)} failed "
                          f"({type(exc).__name__}: {first_line(exc)})")
            return self._eager(input_ids, attention_mask)
        if known:
            return compiled
        eager = self._eager(input_ids, attention_mask)
        difference = float((self._score_fn(compiled) - self._score_fn(eager)).abs().max())
        if not difference <= self.tolerance:  # NaN fails too
            self._disable(f"compiled scores differ from eager by {difference:.3g} (> {self.tolerance:g}) at "
                          f"{_describe(shape)}")
            return eager
        self.largest_difference = max(self.largest_difference, difference)
        self._checked.add(key)
        return compiled

    def _run_compiled(self, input_ids: Any, attention_mask: Any) -> Any:
        if self._cuda:
            # A CUDA graph's outputs live in its own memory and are overwritten by its next replay: mark the
            # step, and hand back a copy the caller may hold.
            self._torch.compiler.cudagraph_mark_step_begin()
            return self._compiled(input_ids=input_ids, attention_mask=attention_mask).logits.clone()
        return self._compiled(input_ids=input_ids, attention_mask=attention_mask).logits

    def _eager(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def _disable(self, why: str) -> None:
        self.disabled = why
        self._compiled = None
        log.warning("scorer: torch.compile off, scoring eagerly from now on: %s", why)


def _describe(shape: tuple) -> str:
    (rows, width), mask = shape[0], shape[1]
    return f"{rows} rows x {width} tokens ({'no mask' if mask is None else f'{len(mask[0])}-D mask'})"
