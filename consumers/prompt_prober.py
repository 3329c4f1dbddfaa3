"""Counterfactual probing of production prompts: sample 1 in N prompts of the generation events, swap their
group terms with the lexicons, ask the deployed model for the prompt as written and for each variant, and
compare the two answers per attribute (``monitor.generation.counterfactual_pairs``).

Sampling is by a hash of the event id, so that a re-run (or another prober) picks the same prompts.
Requests run on ``concurrency`` threads under the client's rate limit; a failed request costs its own pair
(reported in one line), never the run.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fairwatch.monitor.errors import one_line
from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator

from .prober import ChatClient, ProbeError, ProbeFailure

__all__ = ["PromptPair", "ask_pairs", "pairs_from_lines", "pairs_from_records", "sampled"]


def sampled(event_id: str, every: int) -> bool:
    """True for about one event id in ``every``, the same ids on every run.

    >>> sum(sampled(f"e{i}", 10) for i in range(10_000))
    1034
    """
    return every <= 1 or zlib.crc32(event_id.encode("utf-8")) % every == 0


@dataclass(frozen=True, slots=True)
class PromptPair:
    """A production prompt and its counterfactual for one attribute."""

    event_id: str
    attribute: str
    original: str
    counterfactual: str
    swaps: tuple[str, ...]  # "source->target" of each swapped term
    # The group the prompt was about: the event's tag for the attribute, else the first term swapped out.
    # Sentiment gaps are kept per origin: averaged over both directions, a bias would cancel itself out.
    origin: str


MAX_ID_CHARS = 120  # stream ids in output lines: one line, capped (monitor.errors.one_line)


def pairs_from_lines(lines: Iterable[str], generator: CounterfactualGenerator, *, every: int = 1,
                     attributes: set[str] | None = None,
                     counts: Counter | None = None) -> Iterator[PromptPair | ProbeFailure]:
    """The counterfactual pairs of the sampled prompts of JSONL events: a record that is not JSON yields a
    ProbeFailure naming it; one without a string ``prompt`` (a prediction, an outcome) is skipped and
    counted in ``counts["without_prompt"]``. ``event_id`` is used for sampling and naming."""
    numbered = ((f"line {number}", line) for number, line in enumerate(lines, 1))
    return pairs_from_records(numbered, generator, every=every, attributes=attributes, counts=counts)


def pairs_from_records(records: Iterable[tuple[str, str | bytes]], generator: CounterfactualGenerator, *,
                       every: int = 1, attributes: set[str] | None = None,
                       counts: Counter | None = None) -> Iterator[PromptPair | ProbeFailure]:
    """Like :func:`pairs_from_lines` for ``(where, JSON text)`` records, e.g. Kafka records named
    ``topic/partition@offset``."""
    counts = Counter() if counts is None else counts
    for where, line in records:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8; RecursionError: deep nesting
            yield ProbeFailure(where, f"not JSON ({getattr(exc, 'msg', type(exc).__name__)})")
            continue
        if not isinstance(event, dict) or not isinstance(event.get("prompt"), str) or not event["prompt"].strip():
            counts["without_prompt"] += 1
            continue
        event_id = event.get("event_id")
        event_id = (one_line(event_id, MAX_ID_CHARS) if isinstance(event_id, str) and event_id
                    else where.replace(" ", "-"))
        if not sampled(event_id, every):
            counts["not_sampled"] += 1
            continue
        counts["sampled"] += 1
        tags = event.get("groups") if isinstance(event.get("groups"), dict) else {}
        for attribute, variants in generator.variants(event["prompt"]).items():
            if attributes is not None and attribute not in attributes:
                continue
            for k, variant in enumerate(variants):
                tag = tags.get(attribute)
                origin = one_line(tag, MAX_ID_CHARS) if isinstance(tag, str) and tag else (
                    variant.swaps[0].source if variant.swaps else "?")
                yield PromptPair(f"{event_id}-{attribute}-{k}", attribute, event["prompt"], variant.text,
                                 tuple(f"{s.source}->{s.target}" for s in variant.swaps), origin)


def ask_pairs(pairs: Iterable[PromptPair | ProbeFailure], client: ChatClient, *, concurrency: int = 4,
              temperature: float = 0.0, max_tokens: int = 256,
              seed: int | None = None) -> Iterator[tuple[PromptPair, str, str] | ProbeFailure]:
    """``(pair, answer as written, counterfactual answer)`` for each pair, in input order, on ``concurrency``
    threads; a pair whose request fails becomes a ProbeFailure. Both prompts of a pair are sent with the
    same settings and seed, so that only the group words differ."""
    def ask(prompt: str) -> str:
        return client.complete(prompt, temperature=temperature, max_tokens=max_tokens, seed=seed)

    def both(pair: PromptPair) -> tuple[PromptPair, str, str] | ProbeFailure:
        try:
            return pair, ask(pair.original), ask(pair.counterfactual)
        except ProbeError as exc:
            return ProbeFailure(pair.event_id, str(exc))
        except OSError as exc:  # e.g. an ssl.SSLError while reading a reply: this pair's failure, not the run's
            return ProbeFailure(pair.event_id, f"no answer: {type(exc).__name__}: {one_line(str(exc))}")

    def result(item):
        return item if isinstance(item, ProbeFailure) else item.result()

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending: list = []  # futures and failures, in input order
        for pair in pairs:
            pending.append(pair if isinstance(pair, ProbeFailure) else pool.submit(both, pair))
            if len(pending) >= 4 * max(1, concurrency):  # bounded: never the whole input in memory
                yield result(pending.pop(0))
        for item in pending:
            yield result(item)
