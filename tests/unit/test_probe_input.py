"""`fairwatch probe` given bad input: a real local endpoint that answers badly, and bad template files.

Every bad answer costs its own request, in one line; a bad template line is one line naming it (exit 2)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import run_cli

from fairwatch.consumers.prober import ChatClient, ProbeError, ProbeFailure, TemplateError, load_templates
from fairwatch.consumers.prompt_prober import PromptPair, ask_pairs

GENDER = {"gender": {"female": "woman", "male": "man"}}
OK = json.dumps({"choices": [{"message": {"content": "fine answer"}}]}).encode()


class BadServer:
    """/v1/chat/completions on 127.0.0.1 whose fault is named by a word of the prompt."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status: int, body: bytes, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def _redirect_to_itself(self) -> None:
                self.send_response(302)
                self.send_header("Location", "/v1/loop")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802  (urllib follows a 302 to a POST with a GET)
                self._redirect_to_itself()

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                if "deep" in prompt:
                    return self._send(200, b'{"choices":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
                if "bigint" in prompt:
                    return self._send(200, b'{"choices":[{"message":{"content":"x"}}],"n":' + b"1" * 5000 + b"}")
                if "short" in prompt:  # the body ends long before its Content-Length
                    self.close_connection = True
                    return self._send(500, b"short", length=1000)
                if "loop" in prompt:
                    return self._redirect_to_itself()
                if "trickle" in prompt:  # the whole reply, status line included, a byte every 0.1 s
                    self.close_connection = True
                    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(OK)) + OK
                    try:
                        for byte in reply:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:  # the prober gave up on it, as it should
                        pass
                    return None
                return self._send(200, OK)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def bad_server():
    server = BadServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _templates(path, *names: str):
    path.write_text("".join(json.dumps({"id": name, "template": f"{name} story about a {{person}} .",
                                        "fill": {"person": GENDER}}) + "\n" for name in names))
    return path


def test_bad_answers_cost_their_own_request_in_one_line_each(bad_server, tmp_path):
    templates = _templates(tmp_path / "t.jsonl", "fine", "deep", "bigint", "short", "loop")
    result = run_cli("probe", templates, "--endpoint", bad_server.url, "--model", "m", "--retries", "0",
                     "--output", tmp_path / "events.jsonl")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == "fairwatch probe: 2 events written, 8 prompts failed", result.stderr
    reasons = {line.split(": ")[1].rsplit("-", 1)[0]: line for line in lines[:-1]}
    assert len(lines) == 9 and all(line.startswith("fairwatch probe: ") for line in lines), result.stderr
    assert "malformed answer: not JSON (nested too deeply" in reasons["deep-0"]
    assert "malformed answer: not JSON (Exceeds the limit (4300 digits)" in reasons["bigint-0"]
    assert "HTTP 500 from" in reasons["short-0"] and reasons["short-0"].endswith(": short")
    assert "HTTP 302 from" in reasons["loop-0"] and "infinite loop. The last 30x error message was: Found" \
        in reasons["loop-0"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["response"] for e in events] == ["fine answer", "fine answer"]


def test_bad_answers_cost_their_own_pair_on_the_thread_pool(bad_server):
    pairs = [PromptPair(f"p-{fault}", "gender", f"a woman {fault}", f"a man {fault}", ("woman->man",), "woman")
             for fault in ("fine", "deep", "bigint", "short", "fine again")]
    client = ChatClient(bad_server.url, "m", retries=0)
    results = list(ask_pairs(pairs, client, concurrency=3))
    failures = {r.event_id: r.message for r in results if isinstance(r, ProbeFailure)}
    assert sorted(failures) == ["p-bigint", "p-deep", "p-short"]
    assert all("\n" not in message for message in failures.values())
    answered = [r for r in results if isinstance(r, tuple)]
    assert [(pair.event_id, a, b) for pair, a, b in answered] == [
        ("p-fine", "fine answer", "fine answer"), ("p-fine again", "fine answer", "fine answer")]


def test_the_timeout_bounds_the_whole_request_not_each_read(bad_server):
    """The trickled reply takes about 13 s, never 0.5 s between bytes: only a deadline over the request stops it."""
    client = ChatClient(bad_server.url, "m", timeout_seconds=0.5, retries=1, backoff_seconds=0.01)
    start = time.monotonic()
    with pytest.raises(ProbeError, match="no answer from .*: timed out \\(after 2 attempts\\)"):
        client.complete("trickle story", temperature=0.0, max_tokens=8, seed=None)
    assert time.monotonic() - start < 10.0  # far below the trickle's 13 s, far above two 0.5 s deadlines
    assert client.complete("fine story", temperature=0.0, max_tokens=8, seed=None) == "fine answer"


@pytest.mark.parametrize(("data", "message"), [
    (b'{"id": "caf\xe9"}', "t.jsonl:2: not UTF-8 text (byte 12)"),
    (b"[" * 100_000 + b"]" * 100_000, "t.jsonl:2: not JSON (nested too deeply)"),
    (b'{"id": ' + b"1" * 5000 + b"}", "t.jsonl:2: not JSON (Exceeds the limit (4300 digits)"),
])
def test_a_template_line_that_cannot_be_read_is_named(tmp_path, data, message):
    path = _templates(tmp_path / "t.jsonl", "fine")
    path.write_bytes(path.read_bytes() + data + b"\n")
    with pytest.raises(TemplateError) as info:
        load_templates(path)
    assert str(info.value).startswith(f"{path.parent}/{message}") and "\n" not in str(info.value)


def test_an_unreadable_template_file_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"template": "a \xff {person}"}\n')
    result = run_cli("probe", path, "--endpoint", "http://127.0.0.1:9/v1", "--model", "m")
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"fairwatch probe: error: {path}:1: not UTF-8 text (byte 17)\n"


def test_a_template_file_that_starts_with_a_byte_order_mark_is_read(tmp_path):
    """Notepad and PowerShell start a UTF-8 file with a BOM: line 1 was refused as "not JSON"."""
    plain = load_templates(_templates(tmp_path / "plain.jsonl", "fine", "other"))
    path = _templates(tmp_path / "bom.jsonl", "fine", "other")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_templates(path) == plain
    # only the file's start may hold one: a BOM inside is still a line that is not JSON, named
    path.write_bytes(path.read_bytes() + b"\xef\xbb\xbf" + _templates(tmp_path / "x", "third").read_bytes())
    with pytest.raises(TemplateError, match=r"bom\.jsonl:3: not JSON"):
        load_templates(path)
