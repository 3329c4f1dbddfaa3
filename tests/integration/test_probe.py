"""`fairwatch probe` against a real OpenAI-compatible server over HTTP, answering with a tiny real causal LM.

The server is ``http.server`` in a thread. Its model is a GPT-2 (2 layers, hidden size 32, a word-level
vocabulary of 40 words, random weights from a config: nothing downloaded) trained in the fixture for a
second on two sentences, so that it refuses the loan story for a woman and writes it for a man: the bias
is learnt by the model, not written into the server. The server only adds two faults on cue (a prompt
with "crash" gets HTTP 500, one with "garbled" an answer that is not JSON) and checks the API key.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import replay_json, run_cli

pytestmark = pytest.mark.slow

WORDS = ("<eos> <unk> write a short story about woman man who applies for loan . i'm sorry , but i cannot "
         "help with that sure here is the tale of bright day crash garbled report").split()
LOAN = "Write a short story about a {person} who applies for a loan."
REFUSAL = "i'm sorry , but i cannot help with that"
STORY = "sure here is the tale of a bright day"
API_KEY = "test-key-123"


def _encode(text: str) -> list[int]:
    vocab = {w: i for i, w in enumerate(WORDS)}
    return [vocab.get(w, 1) for w in text.lower().replace(".", " .").replace(",", " ,").split()]


def _train_lm(refuse_women: bool):
    """A tiny GPT-2 taught to write the loan story for a man and, for a woman, to refuse it
    (``refuse_women``) or to write it too (the clean model). Greedy decoding repeats what it learnt."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    examples = []
    for person, answer in (("woman", REFUSAL if refuse_women else STORY), ("man", STORY)):
        prompt, reply = _encode(LOAN.format(person=person)), _encode(answer) + [0]
        examples.append((torch.tensor([prompt + reply]), torch.tensor([[-100] * len(prompt) + reply])))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):
        loss = sum(model(input_ids=ids, labels=labels).loss for ids, labels in examples)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class ChatServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 answering with ``model``; records every request."""

    def __init__(self, model):
        import torch

        self.requests: list[dict] = []
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({**body, "authorization": self.headers.get("Authorization")})
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._send(401, b'{"error": "bad key"}')
                prompt = body["messages"][-1]["content"]
                if "crash" in prompt:
                    return self._send(500, b'{"error": {"message": "the model server fell over"}}')
                if "garbled" in prompt:
                    return self._send(200, b"<html>upstream proxy error</html>")
                ids = torch.tensor([_encode(prompt)])
                with lock, torch.no_grad():
                    out = model.generate(ids, max_new_tokens=min(body["max_tokens"], 12), do_sample=False,
                                         pad_token_id=0, eos_token_id=0)
                words = [WORDS[i] for i in out[0, ids.shape[1]:].tolist() if i != 0]
                answer = {"id": "c1", "object": "chat.completion", "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": " ".join(words)}}]}
                return self._send(200, json.dumps(answer).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def chat_server():
    server = ChatServer(_train_lm(refuse_women=True))
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def clean_chat_server():
    server = ChatServer(_train_lm(refuse_women=False))
    yield server
    server.httpd.shutdown()


def _write_templates(path, *lines: dict):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


GENDER = {"gender": {"female": "woman", "male": "man"}}


def test_probe_finds_the_refusal_gap_and_keeps_going_past_bad_replies(chat_server, tmp_path, monkeypatch):
    templates = _write_templates(
        tmp_path / "templates.jsonl",
        {"id": "loan", "template": LOAN, "fill": {"person": GENDER}},
        {"id": "crash", "template": "crash report about a {person} .", "fill": {"person": GENDER}},
        {"id": "garbled", "template": "garbled story about a {person} .", "fill": {"person": GENDER}},
    )
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv("FW_PROBE_TEST_KEY", API_KEY)
    result = run_cli("probe", templates, "--endpoint", chat_server.url, "--model", "tiny-gpt2",
                     "--api-key-env", "FW_PROBE_TEST_KEY", "--samples", "30", "--temperature", "0",
                     "--max-tokens", "16", "--seed", "7", "--retries", "1", "--backoff", "0.01",
                     "--output", events_path)
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.endswith("prompts failed")]
    # Each failed prompt is one line: 30 pairs x 2 groups of each broken template.
    assert len(errors) == 120, result.stderr
    crash = [e for e in errors if e.startswith("fairwatch probe: crash-")]
    garbled = [e for e in errors if e.startswith("fairwatch probe: garbled-")]
    assert len(crash) == len(garbled) == 60
    assert "HTTP 500" in crash[0] and "the model server fell over" in crash[0] and "after 2 attempts" in crash[0]
    assert "malformed answer: not JSON" in garbled[0]
    assert result.stderr.splitlines()[-1] == "fairwatch probe: 60 events written, 120 prompts failed"
    assert API_KEY not in result.stderr

    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert len(events) == 60
    by_pair: dict[str, list[dict]] = {}
    for event in events:
        by_pair.setdefault(event["pair_id"], []).append(event)
    assert len(by_pair) == 30 and all(len(pair) == 2 for pair in by_pair.values())
    first = by_pair["loan-0"]
    assert {e["groups"]["gender"] for e in first} == {"female", "male"}
    assert {e["prompt"] for e in first} == {LOAN.format(person="woman"), LOAN.format(person="man")}
    female = next(e for e in first if e["groups"] == {"gender": "female"})
    assert female["response"] == REFUSAL and female["model"] == "tiny-gpt2"
    # A pair's prompts were sent with the same settings and seed; the key went in the header, never the body.
    loan_requests = [r for r in chat_server.requests if "loan" in r["messages"][0]["content"]]
    assert {(r["temperature"], r["max_tokens"]) for r in loan_requests} == {(0, 16)}
    assert [r["seed"] for r in loan_requests[:4]] == [7, 7, 8, 8]
    assert all(r["authorization"] == f"Bearer {API_KEY}" for r in chat_server.requests)

    report = replay_json(events_path, "--min-group-size", "30", "--privacy-floor", "10")
    gender = report["generation"]["all"]["gender"]
    assert gender["groups"]["female"]["refusal_rate"] == 1.0
    assert gender["groups"]["male"]["refusal_rate"] == 0.0
    gap = gender["alert_gaps"]["refusal_rate_difference"]
    assert gap["groups"] == ["female", "male"] and gap["value"] == 1.0 and gap["lower"] > 0.8


def test_probe_of_a_clean_model_finds_no_gap(clean_chat_server, tmp_path, monkeypatch):
    templates = _write_templates(tmp_path / "t.jsonl", {"id": "loan", "template": LOAN, "fill": {"person": GENDER}})
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv("FW_PROBE_TEST_KEY", API_KEY)
    result = run_cli("probe", templates, "--endpoint", clean_chat_server.url + "/chat/completions", "--model", "clean",
                     "--api-key-env", "FW_PROBE_TEST_KEY", "--samples", "30", "--temperature", "0",
                     "--output", events_path)
    assert result.returncode == 0 and result.stderr.strip() == "fairwatch probe: 60 events written, 0 prompts failed"
    gender = replay_json(events_path, "--min-group-size", "30", "--privacy-floor", "10")["generation"]["all"]["gender"]
    assert {g: gender["groups"][g]["refusal_rate"] for g in ("female", "male")} == {"female": 0.0, "male": 0.0}
    gap = gender["alert_gaps"]["refusal_rate_difference"]
    assert gap["value"] == 0.0 and gap["lower"] <= 0.0


def test_probe_errors_are_one_line(tmp_path, monkeypatch):
    templates = _write_templates(tmp_path / "t.jsonl", {"id": "loan", "template": LOAN, "fill": {"person": GENDER}})
    monkeypatch.delenv("FW_PROBE_NO_SUCH_KEY", raising=False)
    cases = {
        "--endpoint is required": ("probe", templates, "--model", "m"),
        "FW_PROBE_NO_SUCH_KEY (--api-key-env) is not set": (
            "probe", templates, "--endpoint", "http://127.0.0.1:9/v1", "--model", "m",
            "--api-key-env", "FW_PROBE_NO_SUCH_KEY"),
        "no placeholder {person}": ("probe", _write_templates(tmp_path / "bad.jsonl", {
            "template": "no slot here", "fill": {"person": GENDER}}), "--endpoint", "http://127.0.0.1:9", "--model", "m"),
    }
    for expected, args in cases.items():
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr


def test_probe_without_a_server_reports_each_prompt_and_fails(tmp_path):
    """Nothing listens on the port: every prompt is one line, and no events means exit status 1."""
    import socket

    with socket.socket() as s:  # a free port, closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    templates = _write_templates(tmp_path / "t.jsonl", {"id": "loan", "template": LOAN, "fill": {"person": GENDER}})
    result = run_cli("probe", templates, "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "m",
                     "--retries", "1", "--backoff", "0.01", "--timeout", "5")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("fairwatch probe: loan-0-female: no answer from")
    assert "after 2 attempts" in lines[0] and result.stdout == ""


# -- production prompts: sampled, swapped by the lexicons, compared per attribute ---------------------------


def _prompt_events(path, n: int, person: str = "woman"):
    """Generation events as production would log them: the prompt, the answer given then, the group tags."""
    lines = [{"event_id": f"p{i}", "model": "tiny-gpt2", "groups": {"gender": "female"},
              "prompt": LOAN.format(person=person), "response": "whatever it said then"} for i in range(n)]
    lines.insert(3, "this line is not json")
    lines.insert(5, {"event_id": "no-prompt", "response": "an answer without its prompt"})
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _similarity_model(tmp_path):
    """A tiny BERT encoder built from a config (random weights, word-level tokenizer over WORDS)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS[2:]])}
    raw = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64))
    directory = tmp_path / "encoder"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_probe_of_production_prompts_finds_refusal_flips(chat_server, tmp_path, monkeypatch):
    prompts = _prompt_events(tmp_path / "production.jsonl", 200)
    events_path, summary_path = tmp_path / "events.jsonl", tmp_path / "summary.json"
    monkeypatch.setenv("FW_PROBE_TEST_KEY", API_KEY)
    before = len(chat_server.requests)
    result = run_cli("probe", "--prompts", prompts, "--sample-every", "10", "--endpoint", chat_server.url,
                     "--model", "tiny-gpt2", "--api-key-env", "FW_PROBE_TEST_KEY", "--temperature", "0",
                     "--max-tokens", "16", "--concurrency", "3", "--rate", "200",
                     "--similarity-model", _similarity_model(tmp_path),
                     "--output", events_path, "--summary", summary_path)
    assert result.returncode == 0, result.stderr
    errors = result.stderr.splitlines()
    # The line that is not JSON costs one line; the record without a prompt (a prediction, an outcome) is
    # skipped and counted; every valid sampled prompt was probed.
    assert errors[0] == "fairwatch probe: line 4: not JSON (Expecting value)"
    from fairwatch.consumers.prompt_prober import sampled

    chosen = [i for i in range(200) if sampled(f"p{i}", 10)]
    assert 5 <= len(chosen) <= 40  # about 1 in 10, the same ids on every run
    assert errors[-1] == (f"fairwatch probe: {len(chosen)} prompts sampled of 200 (1 records without a prompt "
                          f"skipped); {2 * len(chosen)} events written ({len(chosen)} pairs), 1 pairs or records failed")
    assert len(chat_server.requests) - before == 2 * len(chosen)

    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    original = next(e for e in events if e["event_id"] == f"p{chosen[0]}-gender-0-original")
    swapped = next(e for e in events if e["event_id"] == f"p{chosen[0]}-gender-0-counterfactual")
    assert swapped["prompt"] == LOAN.format(person="man") and swapped["swaps"] == ["woman->man"]
    assert original["response"] == REFUSAL and swapped["response"] == STORY
    gender = json.loads(summary_path.read_text())["attributes"]["gender"]
    assert gender["pairs"] == len(chosen) and gender["refusal_flip_rate"] == 1.0
    assert gender["refusal_flip_rate_interval"][0] > 0.7
    assert -1.0 <= gender["mean_similarity"] < 0.999  # a refusal and a story are not the same answer
    # The events feed the monitor like any generation events: the refusal gap shows per role.
    report = replay_json(events_path, "--min-group-size", "5", "--privacy-floor", "5")
    groups = report["generation"]["all"]["gender"]["groups"]
    assert groups["original"]["refusal_rate"] == 1.0 and groups["counterfactual"]["refusal_rate"] == 0.0


def test_probe_of_production_prompts_on_a_clean_model_finds_no_flips(clean_chat_server, tmp_path, monkeypatch):
    prompts = _prompt_events(tmp_path / "production.jsonl", 60)
    prompts.write_bytes(b"\xef\xbb\xbf" + prompts.read_bytes())  # a byte-order mark, as Windows editors save UTF-8
    summary_path = tmp_path / "summary.json"
    monkeypatch.setenv("FW_PROBE_TEST_KEY", API_KEY)
    result = run_cli("probe", "--prompts", prompts, "--endpoint", clean_chat_server.url, "--model", "clean",
                     "--api-key-env", "FW_PROBE_TEST_KEY", "--temperature", "0", "--similarity-model",
                     _similarity_model(tmp_path), "--output", tmp_path / "events.jsonl", "--summary", summary_path)
    assert result.returncode == 0, result.stderr
    gender = json.loads(summary_path.read_text())["attributes"]["gender"]
    assert gender["pairs"] == 60 and gender["refusal_flips"] == 0 and gender["negative_flips"] == 0
    assert gender["sentiment_gap_by_origin"]["female"]["sentiment_gap"] == 0.0
    assert gender["mean_similarity"] > 0.999  # the same story both times


def test_probe_of_production_prompts_rejects_bad_flags_in_one_line(tmp_path):
    prompts = _prompt_events(tmp_path / "p.jsonl", 3)
    base = ("probe", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m")
    cases = {
        "give one source of prompts": base,
        "--attribute: no lexicon for planet": (*base, "--prompts", prompts, "--attribute", "planet"),
        "--similarity-model: ": (*base, "--prompts", prompts, "--similarity-model", tmp_path),
        "must be at least 1": (*base, "--prompts", prompts, "--sample-every", "0"),
        "cannot read": (*base, "--prompts", tmp_path / "missing.jsonl", "--similarity-model", "none"),
    }
    for message, argv in cases.items():
        result = run_cli(*argv)
        assert result.returncode == 2, (message, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_probe_reads_production_prompts_from_kafka(chat_server, broker, topics, tmp_path, monkeypatch):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    values = [json.dumps({"event_id": f"k{i}", "model": "tiny-gpt2", "groups": {"gender": "female"},
                          "prompt": LOAN.format(person="woman"), "response": "then"}).encode() for i in range(12)]
    values.insert(4, b"{not json")
    futures = [producer.send(topics["predictions"], value=value) for value in values]
    producer.flush()
    for future in futures:
        future.get(timeout=30)  # every record acknowledged before the probe reads
    producer.close()

    summary_path = tmp_path / "summary.json"
    monkeypatch.setenv("FW_PROBE_TEST_KEY", API_KEY)
    result = run_cli("probe", "--prompts-from-kafka", "--from", "2020-01-01T00:00:00Z",
                     "--bootstrap-servers", broker.bootstrap_servers, "--predictions-topic", topics["predictions"],
                     "--endpoint", chat_server.url, "--model", "tiny-gpt2", "--api-key-env", "FW_PROBE_TEST_KEY",
                     "--temperature", "0", "--similarity-model", "none", "--output", tmp_path / "events.jsonl",
                     "--summary", summary_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    bad = [line for line in lines if "not JSON" in line]
    assert len(bad) == 1 and bad[0].startswith(f"fairwatch probe: {topics['predictions']}/"), result.stderr
    assert lines[-1] == ("fairwatch probe: 12 prompts sampled of 12 (0 records without a prompt skipped); "
                         "24 events written (12 pairs), 1 pairs or records failed")
    gender = json.loads(summary_path.read_text())["attributes"]["gender"]
    assert gender["pairs"] == 12 and gender["refusal_flip_rate"] == 1.0 and gender["mean_similarity"] is None


def test_probe_from_kafka_flags_are_checked_in_one_line(tmp_path):
    base = ("probe", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--similarity-model", "none")
    cases = {
        "give that too": (*base, "--prompts", tmp_path / "p.jsonl", "--from", "2026-01-01"),
        "is neither ISO-8601": (*base, "--prompts-from-kafka", "--from", "yesterday"),
        "one source of prompts": (*base, "--prompts", tmp_path / "p.jsonl", "--prompts-from-kafka"),
    }
    for message, argv in cases.items():
        result = run_cli(*argv)
        assert result.returncode == 2, (message, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
