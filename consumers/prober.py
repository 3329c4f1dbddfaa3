"""Counterfactual probing of a live LLM: fill prompt templates for each group, ask an OpenAI-compatible
chat endpoint, and turn each answer into a generation event for the monitor.

A template file is JSONL, one template a line::

    {"id": "loan", "template": "Write a short story about a {person} who applies for a loan.",
     "fill": {"person": {"gender": {"female": "woman", "male": "man"}}}}

``fill`` names the one placeholder, the attribute it stands for and, per group, the words put in. Every
group's prompt of one template and sample forms a counterfactual pair: same sampling settings (and
``seed``), one shared ``pair_id`` in the events.

The HTTP client is the standard library's ``urllib``: the `openai` package would add a dependency for one
POST, and ``requests``/``httpx`` are not core dependencies.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fairwatch.monitor.errors import FairwatchError, one_line

__all__ = ["ChatClient", "ProbeFailure", "ProbeTemplate", "RateLimiter", "TemplateError", "load_templates", "probe"]

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_ERROR_BODY_CHARS = 200
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a runaway body is an error, not a memory spike


class TemplateError(FairwatchError, ValueError):
    """A template file that cannot be used, worded for one line."""


class ProbeError(FairwatchError):
    """One request that got no usable answer, worded for one line."""


@dataclass(frozen=True, slots=True)
class ProbeTemplate:
    """One prompt template with one group placeholder (``slot``) filled per group of ``attribute``."""

    template_id: str
    text: str
    slot: str
    attribute: str
    fills: dict[str, str]

    def prompts(self) -> dict[str, str]:
        """The prompt of each group, e.g. ``{"female": "... a woman ...", "male": "... a man ..."}``."""
        marker = "{" + self.slot + "}"
        return {group: self.text.replace(marker, words) for group, words in self.fills.items()}


def load_templates(path: str | Path) -> list[ProbeTemplate]:
    """Read a JSONL template file (UTF-8, a leading byte-order mark allowed); a bad line raises
    :class:`TemplateError` naming it."""
    try:
        lines = Path(path).read_bytes().splitlines()  # decoded per line, so that bad UTF-8 is named by its line
    except OSError as exc:
        raise TemplateError(f"cannot read templates {path}: {exc.strerror}") from None
    templates, seen = [], set()
    for number, data in enumerate(lines, 1):
        where = f"{path}:{number}"
        try:
            # utf-8-sig on the first line: editors on Windows start a UTF-8 file with a byte-order mark,
            # which json.loads refuses ("Unexpected UTF-8 BOM"); anywhere else it is not ours to drop.
            line = data.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{where}: not UTF-8 text (byte {exc.start + 1})") from None
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise TemplateError(f"{where}: not JSON ({_json_problem(exc)})") from None
        template = _template_from(raw, where, default_id=f"t{number}")
        if template.template_id in seen:
            raise TemplateError(f"{where}: duplicate template id {template.template_id!r}")
        seen.add(template.template_id)
        templates.append(template)
    if not templates:
        raise TemplateError(f"{path}: no templates")
    return templates


def _template_from(raw: object, where: str, default_id: str) -> ProbeTemplate:
    if not isinstance(raw, dict) or not isinstance(raw.get("template"), str):
        raise TemplateError(f"{where}: expected an object with a string 'template'")
    fill = raw.get("fill")
    if not isinstance(fill, dict) or len(fill) != 1:
        raise TemplateError(f"{where}: 'fill' must name exactly one placeholder, e.g. "
                            '{"person": {"gender": {"female": "woman", "male": "man"}}}')
    (slot, by_attribute), = fill.items()
    if "{" + slot + "}" not in raw["template"]:
        raise TemplateError(f"{where}: the template has no placeholder {{{slot}}}")
    if not isinstance(by_attribute, dict) or len(by_attribute) != 1:
        raise TemplateError(f"{where}: placeholder {slot!r} must map one attribute to its groups")
    (attribute, fills), = by_attribute.items()
    if (not isinstance(fills, dict) or len(fills) < 2
            or not all(isinstance(g, str) and isinstance(w, str) for g, w in fills.items())):
        raise TemplateError(f"{where}: attribute {attribute!r} needs at least two groups, each with a string fill")
    template_id = raw.get("id", default_id)
    if not isinstance(template_id, str) or not template_id:
        raise TemplateError(f"{where}: 'id' must be a non-empty string")
    return ProbeTemplate(template_id, raw["template"], slot, str(attribute), dict(fills))


class RateLimiter:
    """At most ``per_second`` request starts a second across threads (0: no limit)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:  # reserve a start time; sleep outside the lock
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


class ChatClient:
    """POST to an OpenAI-compatible ``/chat/completions`` endpoint, with a timeout and retries with backoff.

    ``endpoint`` is the full URL or the API base (``http://host/v1``, to which ``/chat/completions`` is
    added). Every attempt waits for ``limiter`` (shared by threads). Retries: connection errors, timeouts
    and HTTP 408/409/429/5xx, waiting ``backoff_seconds``,
    then twice that, and so on. Other HTTP errors and malformed answers are not retried.
    """

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout_seconds: float = 30.0,
                 retries: int = 2, backoff_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 limiter: RateLimiter | None = None):
        endpoint = endpoint.rstrip("/")
        self.url = endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self.limiter = limiter or RateLimiter(0)

    def complete(self, prompt: str, *, temperature: float, max_tokens: int, seed: int | None) -> str:
        """The assistant's answer to ``prompt``; :class:`ProbeError` when none came back usable."""
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": temperature, "max_tokens": max_tokens}
        if seed is not None:
            body["seed"] = seed
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            self.limiter.wait()  # retries count against the rate too
            # The socket timeout bounds each read, not the request: a server trickling a byte at a time would
            # never trip it. Every read of this attempt (redirects and an error body included) checks the deadline.
            deadline = time.monotonic() + self.timeout_seconds
            opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with opener.open(request, timeout=self.timeout_seconds) as reply:
                    raw = reply.read(MAX_ANSWER_BYTES + 1)
                if len(raw) > MAX_ANSWER_BYTES:
                    raise ProbeError(f"malformed answer: over {MAX_ANSWER_BYTES} bytes")
                return _answer_of(raw)
            except urllib.error.HTTPError as exc:
                error = ProbeError(one_line(f"HTTP {exc.code} from {self.url}: {_snippet(exc)}"))
                retryable = exc.code in RETRYABLE_STATUS
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
                    http.client.HTTPException) as exc:  # HTTPException: a reply cut short (IncompleteRead, ...)
                reason = getattr(exc, "reason", exc)
                error = ProbeError(one_line(f"no answer from {self.url}: {reason}"))
                retryable = True
            if not retryable or attempt == self.retries:
                if attempt:
                    raise ProbeError(f"{error} (after {attempt + 1} attempts)")
                raise error
            self._sleep(self.backoff_seconds * 2**attempt)
        raise AssertionError("unreachable")


class _DeadlineReader(io.RawIOBase):
    """The socket reads of one response, each given only the time left before ``deadline``."""

    def __init__(self, file: io.BufferedReader, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._file, self._sock, self._deadline = file, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left)
        return self._file.raw.readinto(buffer)

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        if not self.closed:
            self._file.close()  # releases the socket, which urllib has already closed on its side
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock, *args, deadline: float, **kwargs) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp, sock, deadline))


class _Deadline:
    """A urllib handler whose connections read their responses under one deadline (``time.monotonic``)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        class Connection(http_class):
            response_class = functools.partial(_DeadlineResponse, deadline=self.deadline)

        return super().do_open(Connection, req, **kwargs)


class _DeadlineHTTPHandler(_Deadline, urllib.request.HTTPHandler):
    pass


class _DeadlineHTTPSHandler(_Deadline, urllib.request.HTTPSHandler):
    pass


def _snippet(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(4 * MAX_ERROR_BODY_CHARS).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):  # HTTPException: a body shorter than its Content-Length
        text = ""
    finally:
        exc.close()  # the rest of the body is not read: release the connection now, not at garbage collection
    text = " ".join(text.split())[:MAX_ERROR_BODY_CHARS]
    return text or str(exc.reason)


def _json_problem(exc: ValueError | RecursionError) -> str:
    """Why ``json.loads`` refused a text, in a few words: a parse error, deep nesting, a huge integer."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return getattr(exc, "msg", None) or one_line(str(exc), MAX_ERROR_BODY_CHARS)


def _answer_of(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8, an integer of >4300 digits
        shown = one_line(raw[:80].decode("utf-8", "replace"))
        raise ProbeError(f"malformed answer: not JSON ({_json_problem(exc)}: {shown!r})") from None
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ProbeError("malformed answer: no choices[0].message.content") from None
    if not isinstance(content, str):
        raise ProbeError(f"malformed answer: content is {type(content).__name__}, not a string")
    return content


@dataclass(frozen=True, slots=True)
class ProbeFailure:
    """A prompt that got no answer: its would-be event id and the one-line reason."""

    event_id: str
    message: str

    def __str__(self) -> str:
        return one_line(f"{self.event_id}: {self.message}")  # ids and reasons come from files and servers


def probe(templates: list[ProbeTemplate], client: ChatClient, *, samples: int = 1, temperature: float = 1.0,
          max_tokens: int = 256, seed: int | None = None,
          now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> Iterator[dict | ProbeFailure]:
    """Ask every group's prompt of every template ``samples`` times; yield generation events, or a
    :class:`ProbeFailure` for a prompt that got no answer (the other prompts go on).

    Sample ``k`` of a template is one counterfactual pair: its prompts share ``pair_id`` and the seed
    ``seed + k`` (when a seed is given), so that only the group words differ between them.
    """
    for template in templates:
        prompts = template.prompts()
        for k in range(samples):
            pair_id = f"{template.template_id}-{k}"
            pair_seed = None if seed is None else seed + k
            for group, prompt in prompts.items():
                event_id = f"{pair_id}-{group}"
                try:
                    response = client.complete(prompt, temperature=temperature, max_tokens=max_tokens, seed=pair_seed)
                except ProbeError as exc:
                    yield ProbeFailure(event_id, str(exc))
                    continue
                yield {"event_id": event_id, "ts": now().isoformat().replace("+00:00", "Z"), "model": client.model,
                       "groups": {template.attribute: group}, "prompt": prompt, "response": response,
                       "pair_id": pair_id, "template_id": template.template_id}
