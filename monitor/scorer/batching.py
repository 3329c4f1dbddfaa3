"""Batched model execution: length-bucketed padding, pinned memory, copy/compute overlap.

``SequenceScorer`` turns token-id sequences into positive-class scores;
``DynamicBatcher`` collects single texts from many callers into batches with a
latency bound. The same code runs on CPU (no pinning, no streams).
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import numpy as np

from fairwatch.monitor.scorer.compiled import CompiledClassifier, row_bucket, row_pieces

__all__ = ["SequenceScorer", "PendingScores", "DynamicBatcher", "pad_batch", "pad_flat", "MAX_ROWS", "TOKENS_PER_BATCH"]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask) int64 arrays, padded on the right to a multiple of ``multiple``.

    Vectorised scatter from one flat array rather than a Python loop per row.
    """
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    width = max(multiple, -(-width // multiple) * multiple)
    total = int(lengths.sum())
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
    row = np.repeat(np.arange(len(rows)), lengths)
    starts = np.cumsum(lengths) - lengths
    col = np.arange(total) - np.repeat(starts, lengths)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    ids[row, col] = flat
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    return ids, mask


def pad_flat(
    flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int, multiple: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`pad_batch`, for rows given as slices ``flat[starts[i]:starts[i]+lengths[i]]``.

    >>> ids, mask = pad_flat(np.array([5, 6, 7]), np.array([2, 0]), np.array([1, 2]), 0, multiple=4)
    >>> ids.tolist(), mask.tolist()
    ([[7, 0, 0, 0], [5, 6, 0, 0]], [[1, 0, 0, 0], [1, 1, 0, 0]])
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max()) if lengths.size else 0
    width = max(multiple, -(-width // multiple) * multiple)
    cols = np.arange(width, dtype=np.int64)
    mask = cols[None, :] < lengths[:, None]
    where = np.minimum(np.asarray(starts, dtype=np.int64)[:, None] + cols[None, :], max(flat.shape[0] - 1, 0))
    ids = np.where(mask, flat[where] if flat.shape[0] else pad_id, pad_id).astype(np.int64)
    return ids, mask.astype(np.int64)


# The token budget of one forward pass (rows x padded width), as before rows were capped separately:
# memory stays bounded at any length, and short texts batch wide.
TOKENS_PER_BATCH = 4096 * 64
# Rows per forward pass. A GPU scores short texts fastest in wide batches (fewer launches per row);
# on a CPU wider batches gain nothing and only hold more memory.
MAX_ROWS = {"cpu": 4096, "cuda": 32768}


class PendingScores:
    """Scores of several launches on their way to the host; :meth:`wait` gives them per launch.

    On CUDA the copy runs behind the queued kernels into pinned memory, so the
    host can assemble the previous batch meanwhile; ``wait`` blocks on that copy alone.
    """

    def __init__(self, device_scores: Any, host_scores: Any, event: Any,
                 parts: list[tuple[int, np.ndarray]], sizes: list[int]) -> None:
        self._device_scores = device_scores  # kept alive until the copy is done
        self._host_scores = host_scores
        self._event = event
        self._parts = parts
        self._sizes = sizes

    def wait(self) -> list[np.ndarray]:
        outs = [np.empty(n, dtype=np.float32) for n in self._sizes]
        if not self._parts:
            return outs
        if self._event is not None:
            self._event.synchronize()
        scores = self._host_scores.numpy()
        pos = 0
        for k, idx in self._parts:
            outs[k][idx] = scores[pos : pos + idx.shape[0]]
            pos += idx.shape[0]
        self._device_scores = None
        return outs


class SequenceScorer:
    """Score token-id sequences with a loaded classifier.

    Sequences are sorted by length so each batch pads little; batches hold at
    most ``max_batch`` rows (default per device, ``MAX_ROWS``) and ``max_tokens``
    padded tokens, so short texts batch wide.
    On CUDA, batches are assembled into pinned host buffers and copied on a
    side stream while the previous batch computes; nothing waits for the device
    until :meth:`PendingScores.wait`. ``model``
    replaces ``loaded.model`` with anything called the same way (an ONNX
    Runtime session wrapped by :mod:`monitor.scorer.cpu_runtime`). ``score_fn`` turns a batch's logits
    into its scores (default: the positive class's probability, ``model.positive_scores``).

    ``compile=True`` runs the model under ``torch.compile`` (:mod:`monitor.scorer.compiled`): batches are cut
    into power-of-two row buckets, and each new shape is checked against the eager model before its scores
    are used.

    Attention masks: transformers reads a 2-D padding mask back to the host to
    decide whether it may skip it, which stalls the queue once per forward pass. Where
    the model's attention takes a prepared 4-D mask (checked against the 2-D form,
    score by score, on the first padded batch of each new width), padded batches get that mask and
    unpadded ones none, so the host waits on the device only for those checks.
    """

    def __init__(self, loaded: Any, max_batch: int | None = None, max_tokens: int | None = None, model: Any = None,
                 score_fn: Callable[[Any], Any] | None = None, compile: bool = False) -> None:
        import torch

        from fairwatch.monitor.scorer.model import positive_scores

        self._torch = torch
        self._positive_scores = positive_scores if score_fn is None else score_fn
        self.model = loaded.model if model is None else model
        self.device = loaded.device
        self._cuda = self.device.type == "cuda"
        self.max_batch = int(max_batch) if max_batch else MAX_ROWS["cuda" if self._cuda else "cpu"]
        self.max_tokens = int(max_tokens) if max_tokens else TOKENS_PER_BATCH
        # The model's own pad id first: a decoder classifier (GPT-2, Llama) finds each row's last token by it,
        # and RoBERTa numbers positions past it; the tokenizer's may differ or be unset.
        pads = (getattr(getattr(loaded.model, "config", None), "pad_token_id", None),
                getattr(loaded.tokenizer, "pad_token_id", None))
        self.pad_id = next((int(pad) for pad in pads if isinstance(pad, int)), 0)
        self._copy_stream = torch.cuda.Stream(device=self.device) if self._cuda else None
        config = getattr(self.model, "config", None)
        self._attention = getattr(config, "_attn_implementation", None)
        # "2d" (the mask as given), "4d" (prepared masks) or None (not decided: no padded batch seen yet)
        self.mask_form: str | None = None if self._attention in ("sdpa", "eager") else "2d"
        self._checked_width = 0  # the widest padded batch the mask form was checked on
        self._dtype = getattr(self.model, "dtype", loaded.dtype)
        self.compiled = None
        if compile:
            # Within the rounding of the model's dtype. bf16 keeps 8 significant bits (a step of 2^-8 just below
            # 1.0), and fused kernels sum in another order: a few such steps apart is the same result.
            tolerance = 1e-4 if self._dtype == torch.float32 else 2.0 ** -6
            self.compiled = CompiledClassifier(self.model, self.device.type, self._positive_scores, tolerance)

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Index arrays of the batches, over sequences sorted by length."""
        order = np.argsort(lengths, kind="stable")
        out = []
        start = 0
        n = len(order)
        while start < n:
            # widest batch whose longest row still fits the token budget
            end = min(n, start + self.max_batch)
            longest = int(lengths[order[end - 1]])
            if longest * (end - start) > self.max_tokens:
                end = start + max(1, self.max_tokens // max(longest, 1))
            for rows in row_pieces(end - start) if self._compiling else [end - start]:  # compiled: few shapes
                out.append(order[start : start + rows])
                start += rows
        return out

    def score(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Positive-class probability of each sequence, float32, in input order."""
        n = len(rows)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=n)
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        return self.collect([self.launch(flat, lengths)], [n])[0]

    def launch(self, flat: np.ndarray, lengths: np.ndarray) -> list[tuple[np.ndarray, Any]]:
        """Start scoring rows given as flat ids and lengths; (row indices, scores on the device) per batch.

        Nothing waits for the device here: on CUDA the host returns as soon as
        the kernels are queued, free to prepare the next rows.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        launched: list[tuple[np.ndarray, Any]] = []
        with self._torch.inference_mode():
            for idx in self.batches(lengths):
                batch_lengths = lengths[idx]
                ids_np, mask_np = pad_flat(flat, starts[idx], batch_lengths, self.pad_id)
                if self._compiling:  # up to its bucket, never past max_batch
                    rows = min(row_bucket(len(idx)), max(self.max_batch, len(idx)))
                    ids_np, mask_np = _pad_rows(ids_np, mask_np, rows)
                ids, mask = self._to_device(ids_np, mask_np)
                width = ids_np.shape[1]
                padded = int(batch_lengths.min()) < width
                if padded and self.mask_form != "2d" and width > self._checked_width:
                    # again at each new width: a model may read the mask alike up to some width only
                    # (a sliding attention window, which a prepared mask would switch off)
                    self.mask_form = self._choose_mask_form(ids[: len(idx)], mask[: len(idx)])  # real rows only
                    self._checked_width = width
                logits = self._logits(ids, self._attention_mask(mask, padded))
                launched.append((idx, self._positive_scores(logits)[: len(idx)]))
        return launched

    def fetch(self, launches: list[list[tuple[np.ndarray, Any]]], sizes: list[int]) -> PendingScores:
        """Start copying the scores of several :meth:`launch` calls (of ``sizes`` rows each) to the host."""
        torch = self._torch
        parts = [(k, idx, s) for k, launched in enumerate(launches) for idx, s in launched]
        if not parts:
            return PendingScores(None, None, None, [], sizes)
        scores = torch.cat([s for _, _, s in parts])
        event = None
        host = scores
        if self._cuda:
            host = torch.empty(scores.shape, dtype=scores.dtype, pin_memory=True)
            host.copy_(scores, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        return PendingScores(scores, host, event, [(k, idx) for k, idx, _ in parts], sizes)

    def collect(self, launches: list[list[tuple[np.ndarray, Any]]], sizes: list[int]) -> list[np.ndarray]:
        """Scores of several :meth:`launch` calls (of ``sizes`` rows each), with one device->host copy."""
        return self.fetch(launches, sizes).wait()

    @property
    def _compiling(self) -> bool:
        """Batches are cut and padded to compiled shapes (compile asked for, and not fallen back to eager)."""
        return self.compiled is not None and self.compiled.active

    def _logits(self, ids: Any, attention_mask: Any) -> Any:
        if self.compiled is not None:
            return self.compiled.logits(ids, attention_mask)
        return self.model(input_ids=ids, attention_mask=attention_mask).logits

    def _attention_mask(self, mask: Any, padded: bool) -> Any:
        if self.mask_form != "4d":
            return mask
        # no padding: no mask, as transformers does for an all-ones mask, without reading it back
        return self._prepared_mask(mask) if padded else None

    def _prepared_mask(self, mask: Any) -> Any:
        """The 2-D padding mask as the attention takes it: boolean for SDPA, additive for eager attention."""
        keep = mask.bool()[:, None, None, :]
        if self._attention == "sdpa":
            return keep
        return (~keep).to(self._dtype) * self._torch.finfo(self._dtype).min

    def _choose_mask_form(self, ids: Any, mask: Any) -> str:
        """"4d" if this model gives the same scores with a prepared mask as with the 2-D one, else "2d".

        Checked row by row on the batch's shortest and longest rows; it waits for the device once.
        """
        torch = self._torch
        n = ids.shape[0]
        rows = torch.tensor(sorted({0, 1, 2, 3, n - 4, n - 3, n - 2, n - 1} & set(range(n))), device=ids.device)
        sub_ids, sub_mask = ids.index_select(0, rows), mask.index_select(0, rows)
        try:
            given = self._positive_scores(self.model(input_ids=sub_ids, attention_mask=sub_mask).logits)
            prepared = self._positive_scores(
                self.model(input_ids=sub_ids, attention_mask=self._prepared_mask(sub_mask)).logits)
            tolerance = 1e-5 if self._dtype == torch.float32 else 1e-3
            same = given.shape == prepared.shape and bool(((given - prepared).abs() <= tolerance).all())
        except Exception:  # noqa: BLE001 - an architecture that takes only 2-D masks, or any failure: keep them
            return "2d"
        return "4d" if same else "2d"

    def _to_device(self, ids_np: np.ndarray, mask_np: np.ndarray) -> tuple[Any, Any]:
        torch = self._torch
        ids = torch.from_numpy(ids_np)
        mask = torch.from_numpy(mask_np)
        if not self._cuda:
            return ids.to(self.device), mask.to(self.device)
        compute = torch.cuda.current_stream(self.device)
        # Pinned memory makes the copy asynchronous; the side stream lets it
        # run while the previous batch is still computing.
        ids, mask = ids.pin_memory(), mask.pin_memory()
        with torch.cuda.stream(self._copy_stream):
            ids_d = ids.to(self.device, non_blocking=True)
            mask_d = mask.to(self.device, non_blocking=True)
        compute.wait_stream(self._copy_stream)
        # tell the caching allocator these tensors are used on the compute stream
        ids_d.record_stream(compute)
        mask_d.record_stream(compute)
        return ids_d, mask_d


def _pad_rows(ids: np.ndarray, mask: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` and ``mask`` with copies of their first row appended up to ``rows`` rows (their scores are dropped):
    a copy of a real row, not an all-padding one, so that no row's attention is empty."""
    extra = rows - ids.shape[0]
    if extra <= 0:
        return ids, mask
    return (np.concatenate([ids, np.repeat(ids[:1], extra, axis=0)]),
            np.concatenate([mask, np.repeat(mask[:1], extra, axis=0)]))


class DynamicBatcher:
    """Collect items from many callers; run ``fn`` on up to ``max_batch`` of them
    or whatever arrived within ``max_wait_ms`` of the first one.

    ``submit(item)`` returns a ``Future`` with ``fn``'s result for that item.

    >>> b = DynamicBatcher(lambda xs: [x * 2 for x in xs], max_batch=4, max_wait_ms=5)
    >>> [f.result() for f in [b.submit(i) for i in range(6)]]
    [0, 2, 4, 6, 8, 10]
    >>> b.close()
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch: int = 1024, max_wait_ms: float = 10.0) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_ms / 1000.0
        self._queue: queue.Queue[tuple[Any, Future] | None] = queue.Queue()
        self._closed = False
        self.batch_sizes: list[int] = []  # for tests and tuning
        self._worker = threading.Thread(target=self._run, name="fairwatch-batcher", daemon=True)
        self._worker.start()

    def submit(self, item: Any) -> Future:
        if self._closed:
            raise RuntimeError("batcher is closed")
        fut: Future = Future()
        self._queue.put((item, fut))
        return fut

    def close(self) -> None:
        """Finish pending items, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join()

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.max_wait_seconds
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=max(remaining, 0.0)) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self.batch_sizes.append(len(batch))
            try:
                results = self.fn([item for item, _ in batch])
                for (_, fut), res in zip(batch, results, strict=True):
                    fut.set_result(res)
            except BaseException as exc:  # hand the error to every caller instead of killing the worker
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
