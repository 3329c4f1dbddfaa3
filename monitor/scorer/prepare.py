"""Host-side preparation: texts -> token ids of each text and of its counterfactual variants.

Variant generation is Python (regexes, case matching, token splicing) and
holds the GIL, so threads do not help; :class:`HostPreparer` spreads chunks
of texts over a process pool instead. Workers return flat numpy arrays (token
ids, row lengths, swaps as term codes), which pickle in one copy, never
Python objects per variant. The serial path runs the very same
:class:`TextPreparer` in-process, so both paths give the same rows; the
scores are the same up to float rounding where a batch too small to fill
the pool is cut into smaller chunks (hence device batches) than in-process.

>>> from tokenizers import Tokenizer, models, pre_tokenizers
>>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "he": 1, "she": 2, "left": 3}, unk_token="[UNK]"))
>>> tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
>>> from monitor.scorer.counterfactuals import Lexicon
>>> lex = Lexicon.from_mapping({"attributes": {"gender": {"pairs": [["he", "she"]]}}})
>>> rows = TextPreparer(tok, lex).prepare(["he left", "hello"])
>>> rows.ids.tolist(), rows.lengths.tolist(), rows.variant_text.tolist()
([1, 3, 0, 2, 3], [2, 1, 2], [0])
>>> [rows.terms[c] for c in (rows.swap_source[0], rows.swap_target[0])]
['he', 'she']
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Sequence

import numpy as np

from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon
from fairwatch.monitor.scorer.tokens import VariantTokenizer

__all__ = ["PreparedRows", "TextPreparer", "HostPreparer", "lexicon_terms", "default_workers"]


def lexicon_terms(lexicon: Lexicon) -> tuple[str, ...]:
    """Every term a swap can name (swapped out or in), sorted: the shared code table of swaps."""
    terms: set[str] = set()
    for attr in lexicon.attributes.values():
        terms.update(attr.all_terms)
        for before_word, otherwise in attr.contextual.values():
            terms.update((before_word, otherwise))
    return tuple(sorted(terms))


def default_workers(device_type: str) -> int:
    """Worker processes for variant generation: all cores but one on a GPU host, none on CPU.

    On CPU the model itself needs the cores and dominates, so extra processes
    would only steal them.
    """
    if device_type != "cuda":
        return 0
    return max(0, min(32, (os.cpu_count() or 1) - 1))


@dataclass
class PreparedRows:
    """Token-id rows for ``n_texts`` valid texts: their originals first, then every variant.

    Variant ``k`` is row ``n_texts + k``; ``variant_text`` is its text's index
    within the chunk; ``variant_attribute`` indexes ``attributes``; swaps are
    flat (``swap_variant[s]`` is the variant of swap ``s``) with terms as codes
    into ``terms``.
    """

    n_texts: int
    ids: np.ndarray  # int32, all rows concatenated
    lengths: np.ndarray  # int32, per row
    variant_text: np.ndarray  # int32, per variant
    variant_attribute: np.ndarray  # int16, per variant
    swap_variant: np.ndarray  # int32, per swap
    swap_source: np.ndarray  # int16, per swap
    swap_target: np.ndarray  # int16, per swap
    attributes: tuple[str, ...]
    terms: tuple[str, ...]
    spliced: int = 0  # variants built by token-id splicing
    retokenized: int = 0  # variants that needed a tokenizer pass

    @property
    def n_rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_variants(self) -> int:
        return int(self.variant_text.shape[0])


class TextPreparer:
    """Tokenize texts and build their variants' token ids (one process, one chunk at a time)."""

    def __init__(self, tokenizer: Any, lexicon: Lexicon, max_length: int = 64, splice: bool = True) -> None:
        self.tokens = tokenizer if isinstance(tokenizer, VariantTokenizer) else VariantTokenizer(
            tokenizer, max_length=max_length, splice=splice
        )
        self.generator = CounterfactualGenerator(lexicon)
        self.attributes = tuple(lexicon.attributes)
        self._attribute_code = {name: i for i, name in enumerate(self.attributes)}
        self.terms = lexicon_terms(lexicon)
        self._term_code = {t: i for i, t in enumerate(self.terms)}

    def prepare(self, texts: Sequence[str]) -> PreparedRows:
        """Rows of ``texts`` (all valid, non-empty strings: the caller checks)."""
        tokens = self.tokens
        truncate = tokens.truncate
        encodings = tokens.encode(list(texts))
        rows: list[list[int]] = [truncate(e.ids) for e in encodings]
        variant_text: list[int] = []
        variant_attribute: list[int] = []
        swap_variant: list[int] = []
        swap_source: list[int] = []
        swap_target: list[int] = []
        pending_text: list[str] = []  # variants that must be re-tokenized
        pending_row: list[int] = []
        attribute_code = self._attribute_code
        term_code = self._term_code
        variants_of = self.generator.variants
        for j, (text, enc) in enumerate(zip(texts, encodings)):
            for name, vs in variants_of(text).items():
                a = attribute_code[name]
                for v in vs:
                    k = len(variant_text)
                    variant_text.append(j)
                    variant_attribute.append(a)
                    for sw in v.swaps:
                        swap_variant.append(k)
                        swap_source.append(term_code[sw.source])
                        swap_target.append(term_code[sw.target])
                    ids = tokens.splice_ids(enc, v.swaps)
                    if ids is None:
                        pending_row.append(len(rows))
                        pending_text.append(v.text)
                        rows.append([])
                    else:
                        rows.append(truncate(ids))
        if pending_text:
            for r, e in zip(pending_row, tokens.encode(pending_text)):
                rows[r] = truncate(e.ids)
        lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
        return PreparedRows(
            n_texts=len(texts),
            ids=flat,
            lengths=lengths,
            variant_text=np.asarray(variant_text, dtype=np.int32),
            variant_attribute=np.asarray(variant_attribute, dtype=np.int16),
            swap_variant=np.asarray(swap_variant, dtype=np.int32),
            swap_source=np.asarray(swap_source, dtype=np.int16),
            swap_target=np.asarray(swap_target, dtype=np.int16),
            attributes=self.attributes,
            terms=self.terms,
            spliced=len(variant_text) - len(pending_text),
            retokenized=len(pending_text),
        )


def _main_is_importable() -> bool:
    """False when ``__main__`` names a file that does not exist (``python -`` reading stdin)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None or main_file is None or os.path.exists(main_file)


# -- the worker side of the pool ------------------------------------------------
_WORKER: TextPreparer | None = None
_ALL_STARTED: Any = None  # a barrier of every worker of the pool, for warm_up
WARM_UP_SECONDS = 300.0  # how long warm_up waits for every worker to start (imports on a busy machine)


def _init_worker(tokenizer_json: str, lexicon: Lexicon, max_length: int, splice: bool, all_started: Any) -> None:
    # Each worker is one core: Rust-side parallelism would oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER, _ALL_STARTED
    _WORKER = TextPreparer(tokenizer_json, lexicon, max_length=max_length, splice=splice)
    _ALL_STARTED = all_started


def _wait_for_all_workers() -> int:
    """Block until every worker of the pool runs this task: none can take two, so all have started."""
    assert _ALL_STARTED is not None, "worker not initialised"
    _ALL_STARTED.wait(WARM_UP_SECONDS)
    return os.getpid()


def _prepare_in_worker(texts: list[str]) -> PreparedRows:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.prepare(texts)


class _Done:
    """A Future-like wrapper for a value computed lazily in-process (the serial path)."""

    def __init__(self, compute: Callable[[], PreparedRows]) -> None:
        self._compute = compute

    def result(self) -> PreparedRows:
        return self._compute()


class _PoolResult:
    """A pool future that falls back to in-process preparation if the pool breaks.

    The rows do not depend on where they are prepared, so the fallback changes
    speed, never results.
    """

    def __init__(self, owner: HostPreparer, future: Future, texts: list[str]) -> None:
        self._owner = owner
        self._future = future
        self._texts = texts

    def result(self) -> PreparedRows:
        try:
            return self._future.result()
        except BrokenProcessPool:
            self._owner._pool_broke()
            return self._owner.local.prepare(self._texts)


class HostPreparer:
    """Prepare chunks of texts serially (``workers=0``) or on a pool of ``workers`` processes.

    ``submit(texts)`` splits ``texts`` into chunks of ``chunk_texts`` (smaller
    on the pool when that leaves a worker idle) and returns one future per chunk at once, so the caller can keep the pool busy
    on the next batch while the GPU scores the current one. Batches of fewer
    than ``min_parallel_texts`` texts stay in-process: a round trip to the pool
    costs more than it saves.
    """

    def __init__(
        self,
        tokenizer: Any,
        lexicon: Lexicon,
        max_length: int = 64,
        splice: bool = True,
        workers: int = 0,
        chunk_texts: int = 2048,
        min_parallel_texts: int = 512,
    ) -> None:
        if chunk_texts < 1:
            raise ValueError("chunk_texts must be at least 1")
        self.local = TextPreparer(tokenizer, lexicon, max_length=max_length, splice=splice)
        self.workers = max(0, int(workers))
        self.chunk_texts = chunk_texts
        self.min_parallel_texts = min_parallel_texts
        self._init_args = (self.local.tokens.backend.to_str(), lexicon, max_length, splice)
        self._pool: ProcessPoolExecutor | None = None

    @property
    def tokens(self) -> VariantTokenizer:
        return self.local.tokens

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the parent may hold a CUDA context and threads,
            # which a forked child must never touch. Workers import no torch.
            context = get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context,
                initializer=_init_worker, initargs=(*self._init_args, context.Barrier(self.workers)),
            )
        return self._pool

    def warm_up(self) -> int:
        """Start every worker now (seconds: each imports the package) rather than during the first batches.

        Returns, with the number of workers running, once all of them have
        started, not when the first one has: a worker that started early would
        otherwise take every warm-up task.
        """
        self._check_main()
        if not self.workers:
            return 0
        pool = self._get_pool()
        try:
            return len({f.result() for f in [pool.submit(_wait_for_all_workers) for _ in range(self.workers)]})
        except threading.BrokenBarrierError:
            # a worker that cannot start in minutes is hung: stop them all, prepare in-process from now on
            warnings.warn(f"not every variant worker started within {WARM_UP_SECONDS:.0f} s: preparing texts "
                          "in-process", RuntimeWarning, stacklevel=2)
            self._pool_broke(terminate=True)
        except BrokenProcessPool:
            self._pool_broke()
        return 0

    def submit(self, texts: Sequence[str]) -> list[_PoolResult | _Done]:
        if not texts:
            return []
        self._check_main()
        if not self.workers or len(texts) < self.min_parallel_texts:
            return [_Done(lambda c=c: self.local.prepare(c)) for c in self._chunks(texts, self.chunk_texts)]
        # a batch smaller than workers x chunk_texts still spreads over every worker
        chunks = self._chunks(texts, min(self.chunk_texts, -(-len(texts) // self.workers)))
        try:
            pool = self._get_pool()
            return [_PoolResult(self, pool.submit(_prepare_in_worker, c), c) for c in chunks]
        except BrokenProcessPool:  # a worker died between batches
            self._pool_broke()
            return [_Done(lambda c=c: self.local.prepare(c)) for c in chunks]

    def _check_main(self) -> None:
        if self.workers and not _main_is_importable():
            # spawn re-runs the parent's main script in each worker; a script
            # read from stdin cannot be, and every worker would die at start.
            warnings.warn("the main script is not a file (stdin?): preparing texts in-process", RuntimeWarning,
                          stacklevel=3)
            self.workers = 0

    @staticmethod
    def _chunks(texts: Sequence[str], size: int) -> list[list[str]]:
        return [list(texts[i : i + size]) for i in range(0, len(texts), size)]

    def _pool_broke(self, terminate: bool = False) -> None:
        if self.workers and not terminate:
            warnings.warn("a variant worker process died: preparing texts in-process from now on", RuntimeWarning,
                          stacklevel=3)
        self.workers = 0
        if self._pool is not None:
            if terminate:  # a hung worker would block shutdown; the executor has no public way to stop it
                for process in list(getattr(self._pool, "_processes", {}).values()):
                    process.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:  # best effort; close() is the supported way
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
