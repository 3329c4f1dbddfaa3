"""`fairwatch dashboards push` against a stand-in for Grafana's HTTP API that records every request.

Grafana has no package on these machines, so the stand-in implements the few
endpoints grafana-client calls (folder get/create, dashboard get/post,
health), stores what is posted the way Grafana does (adding id and version),
and answers 401 to an unknown token and 403 to a read-only one.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fairwatch.dashboards.render import dashboards
from fairwatch.cli import main

TOKEN, VIEWER_TOKEN = "glsa_good", "glsa_viewer"


class StandInGrafana:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.posted: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorized(self, write: bool) -> bool:
                auth = self.headers.get("Authorization")
                outer.requests.append((self.command, self.path, auth))
                if auth not in (f"Bearer {TOKEN}", f"Bearer {VIEWER_TOKEN}"):
                    self.reply(401, {"message": "Invalid API key"})
                    return False
                if write and auth == f"Bearer {VIEWER_TOKEN}":
                    self.reply(403, {"message": "Access denied"})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/api/health":
                    outer.requests.append((self.command, self.path, self.headers.get("Authorization")))
                    return self.reply(200, {"database": "ok", "version": "11.6.0"})
                if not self.authorized(write=False):
                    return None
                if self.path.startswith("/api/folders/"):
                    folder = outer.folders.get(self.path.rsplit("/", 1)[1])
                    return self.reply(200, folder) if folder else self.reply(404, {"message": "folder not found"})
                if self.path.startswith("/api/dashboards/uid/"):
                    stored = outer.dashboards.get(self.path.rsplit("/", 1)[1])
                    if stored is None:
                        return self.reply(404, {"message": "Dashboard not found"})
                    return self.reply(200, {"dashboard": stored["dashboard"],
                                            "meta": {"folderUid": stored["folderUid"], "version": stored["version"]}})
                return self.reply(404, {"message": "Not found"})

            def do_POST(self) -> None:  # noqa: N802
                if not self.authorized(write=True):
                    return None
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/folders":
                    folder = {"uid": body["uid"], "title": body["title"], "id": len(outer.folders) + 1}
                    outer.folders[body["uid"]] = folder
                    return self.reply(200, outer.folders[body["uid"]])
                if self.path == "/api/dashboards/db":
                    outer.posted.append(body)
                    uid = body["dashboard"]["uid"]
                    version = outer.dashboards.get(uid, {}).get("version", 0) + 1
                    dashboard = {**body["dashboard"], "id": 100 + len(outer.dashboards), "version": version}
                    outer.dashboards[uid] = {"dashboard": dashboard, "folderUid": body.get("folderUid"),
                                             "version": version}
                    return self.reply(200, {"status": "success", "uid": uid, "version": version})
                return self.reply(404, {"message": "Not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.requests if m not in ("GET", "HEAD")]


@pytest.fixture
def grafana():
    stand_in = StandInGrafana()
    stand_in.thread.start()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def push(*args: str) -> int:
    return main(["dashboards", "push", *args])


def test_first_push_creates_the_folder_and_writes_each_dashboard(grafana, capsys):
    assert push("--url", grafana.url, "--token", TOKEN) == 0
    uids = sorted(d["uid"] for d in dashboards().values())
    assert grafana.writes() == [("POST", "/api/folders")] + [("POST", "/api/dashboards/db")] * len(uids)
    assert {auth for _, _, auth in grafana.requests} == {f"Bearer {TOKEN}"}
    assert grafana.folders["fairwatch"]["title"] == "fairwatch"
    assert sorted(grafana.dashboards) == uids
    assert all(p["folderUid"] == "fairwatch" and p["overwrite"] is True for p in grafana.posted)
    assert {("GET", f"/api/dashboards/uid/{u}") for u in uids} <= {(m, p) for m, p, _ in grafana.requests}
    out = capsys.readouterr().out
    assert f"{len(uids)} written" in out and "0 unchanged" in out


def test_second_push_makes_no_write_request(grafana, capsys):
    assert push("--url", grafana.url, "--token", TOKEN) == 0
    first = len(grafana.requests)
    assert push("--url", grafana.url, "--token", TOKEN) == 0
    second = grafana.requests[first:]
    assert second and all(method == "GET" for method, _, _ in second)
    assert {d["version"] for d in grafana.dashboards.values()} == {1}
    assert "0 written" in capsys.readouterr().out.splitlines()[-1]


def test_a_changed_dashboard_is_written_again(grafana):
    assert push("--url", grafana.url, "--token", TOKEN) == 0
    grafana.dashboards["fairwatch-model"]["dashboard"]["title"] = "edited by hand"
    before = len(grafana.requests)
    assert push("--url", grafana.url, "--token", TOKEN) == 0
    writes = [(m, p) for m, p, _ in grafana.requests[before:] if m == "POST"]
    assert writes == [("POST", "/api/dashboards/db")]
    assert grafana.dashboards["fairwatch-model"]["dashboard"]["title"] == "fairwatch: model"
    assert grafana.dashboards["fairwatch-model"]["version"] == 2


def test_url_and_token_from_the_environment(grafana, monkeypatch):
    monkeypatch.setenv("GRAFANA_URL", grafana.url)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert push() == 0
    assert grafana.requests and all(auth == f"Bearer {TOKEN}" for _, _, auth in grafana.requests)


@pytest.mark.parametrize("token, status", [("glsa_wrong", 401), (VIEWER_TOKEN, 403)])
def test_a_bad_token_is_one_clear_line_and_exit_2(grafana, capsys, token, status):
    assert push("--url", grafana.url, "--token", token) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"refused the token (HTTP {status})" in err and grafana.url in err
    assert not grafana.dashboards


def test_an_unreachable_grafana_is_one_clear_line_and_exit_2(capsys):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert push("--url", f"http://127.0.0.1:{port}", "--token", TOKEN, "--timeout", "3") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err == f"fairwatch dashboards: error: cannot reach Grafana at http://127.0.0.1:{port}: Connection refused"


def test_no_url_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("GRAFANA_URL", raising=False)
    assert push("--token", TOKEN) == 2
    assert "GRAFANA_URL" in capsys.readouterr().err


class NotGrafana(BaseHTTPRequestHandler):
    """A 200 to everything, as a proxy's login page or another service on Grafana's port answers."""

    body = b""
    content_type = "application/json"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_POST = do_GET


@pytest.mark.parametrize("body, content_type, words", [
    (b"<html>sign in</html>", "text/html", "answered a dashboard request with something other than Grafana's JSON "
                                           "(str)"),
    (b"<html>sign in</html>", "application/json", "answered with a body that is not JSON"),
    (b"[1, 2]", "application/json", "answered a dashboard request with something other than Grafana's JSON (list)"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", "cannot use Grafana at"),
    (b'{"choices": []}', "application/json", "did not confirm saving dashboard"),  # JSON, but nothing saved
])
def test_a_server_that_is_not_grafana_is_one_line_not_a_traceback_or_a_false_success(capsys, body, content_type,
                                                                                      words):
    handler = type("Answer", (NotGrafana,), {"body": body, "content_type": content_type})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        assert push("--url", f"http://127.0.0.1:{server.server_address[1]}", "--token", TOKEN) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("flags, words", [
    (("--url", "http://[::1"), "is not a URL (Invalid IPv6 URL)"),
    (("--url", "http://127.0.0.1:99999"), "is not a URL (Port out of range 0-65535)"),
    (("--url", "grafana:3000"), "is not an http(s) URL"),
    (("--url", "http://127.0.0.1:3000", "--timeout", "-1"), "'-1' is not a positive number"),
])
def test_a_url_or_timeout_no_request_can_use_is_refused_before_any(capsys, flags, words):
    with pytest.raises(SystemExit) as raised:
        push(*flags, "--token", TOKEN)
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
