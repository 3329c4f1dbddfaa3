"""``fairwatch probe``: counterfactual prompts to a live chat model, answers written as generation events."""

from __future__ import annotations

import argparse
import json
import os
import sys

from fairwatch.cli import UsageError, finite_float


def register(commands) -> None:
    parser = commands.add_parser(
        "probe", help="send counterfactual prompt pairs to an OpenAI-compatible chat endpoint; write generation events")
    parser.add_argument("templates", help="JSONL file of templates with one group placeholder (see docs/generation.md)")
    parser.add_argument("--endpoint", help="chat/completions URL, or the API base (http://host/v1)")
    parser.add_argument("--model", help="model name sent to the endpoint and written in the events (required)")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (sent as a Bearer token)")
    parser.add_argument("--output", "-o", default="-", help="JSONL file for the events (default: stdout)")
    parser.add_argument("--samples", type=int, default=1, help="counterfactual pairs per template (1)")
    parser.add_argument("--temperature", type=finite_float, default=1.0, help="sampling temperature, the same for every prompt (1.0)")
    parser.add_argument("--max-tokens", type=int, default=256, help="answer length limit (256)")
    parser.add_argument("--seed", type=int, help="seed sent with sample k as SEED+k, shared within a pair (none: no seed sent)")
    parser.add_argument("--timeout", type=finite_float, default=30.0, help="seconds per request (30)")
    parser.add_argument("--retries", type=int, default=2, help="retries after a timeout, connection error, 429 or 5xx (2)")
    parser.add_argument("--backoff", type=finite_float, default=1.0, help="seconds before the first retry, doubling (1)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fairwatch.consumers.prober import ChatClient, ProbeFailure, TemplateError, load_templates, probe

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
    if args.samples < 1 or args.max_tokens < 1 or args.retries < 0 or args.timeout <= 0 or args.backoff < 0:
        raise UsageError("--samples and --max-tokens must be at least 1, --retries and --backoff at least 0, "
                         "--timeout above 0")
    try:
        templates = load_templates(args.templates)
    except TemplateError as exc:
        raise UsageError(str(exc)) from None

    client = ChatClient(args.endpoint, args.model, api_key, timeout_seconds=args.timeout, retries=args.retries,
                        backoff_seconds=args.backoff)
    try:
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    written = failed = 0
    try:
        for result in probe(templates, client, samples=args.samples, temperature=args.temperature,
                            max_tokens=args.max_tokens, seed=args.seed):
            if isinstance(result, ProbeFailure):
                failed += 1
                print(f"fairwatch probe: {result}", file=sys.stderr, flush=True)
                continue
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
            out.flush()
            written += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"fairwatch probe: {written} events written, {failed} prompts failed", file=sys.stderr)
    return 1 if written == 0 else 0
