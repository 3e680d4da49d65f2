"""Fixtures of the data tests: a local HTTP server and an isolated home/data root."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Caches never touch the real home: HOME and METAZOO_DATA point into a temporary folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("METAZOO_DATA", str(home / "metazoo"))
    return home


@dataclass
class FileServer:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)  # path -> number of 500s before success
    ranges: bool = True  # honour Range requests (206) or ignore them (200, whole file)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    sent: list[int] = field(default_factory=list)  # body bytes answered per successful request
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            path = self.path.lstrip("/")
            state.requests.append((path, self.headers.get("Range")))
            if state.fail.get(path, 0) > 0:
                state.fail[path] -= 1
                self.send_error(500, "planned failure")
                return
            if path not in state.files:
                self.send_error(404)
                return
            body, start = state.files[path], 0
            rng = self.headers.get("Range")
            if rng and state.ranges:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            # Recorded before the write: the client may finish reading (and the test assert)
            # before this thread runs again, which made an append after the write racy.
            state.sent.append(len(body) - start)
            self.wfile.write(body[start:])

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """An HTTP server on 127.0.0.1 serving `state.files`, stopped after the test."""
    state = FileServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
