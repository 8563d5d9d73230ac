"""Resumable weight downloads, tested against a small HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from jaxdream import zoo
from jaxdream.errors import FetchError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


class _Handler(BaseHTTPRequestHandler):
    payload = PAYLOAD
    drop_first_after: int | None = None  # first full request: close after this many bytes
    requests: ClassVar[list[str | None]] = []  # the Range header of every request

    def do_GET(self):
        range_header = self.headers.get("Range")
        type(self).requests.append(range_header)
        start = int(range_header.split("=")[1].rstrip("-")) if range_header else 0
        body = self.payload[start:]
        self.send_response(206 if range_header else 200)
        if range_header:
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        limit = type(self).drop_first_after
        if limit is not None and not range_header:
            self.wfile.write(body[:limit])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("H", (_Handler,), {"requests": [], "drop_first_after": None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_resumes_after_a_dropped_connection(server, tmp_path):
    handler, base = server
    handler.drop_first_after = 30_000
    seen = []
    dest = zoo.download(f"{base}/x.weights", tmp_path / "x.weights", (len(PAYLOAD),), lambda d, t: seen.append(d))
    assert dest.read_bytes() == PAYLOAD
    assert handler.requests == [None, "bytes=30000-"]
    assert seen[-1] == len(PAYLOAD)
    assert not (tmp_path / "x.weights.part").exists()


def test_wrong_size_leaves_nothing_under_the_final_name(server, tmp_path):
    _, base = server
    with pytest.raises(FetchError, match="downloaded 102400 bytes, but the architecture needs 5"):
        zoo.download(f"{base}/x.weights", tmp_path / "x.weights", (5,))
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_keeps_the_partial_file_for_resume(tmp_path):
    part = tmp_path / "x.weights.part"
    part.write_bytes(b"abc")
    with pytest.raises(FetchError, match="run the command again to resume"):
        zoo.download("http://127.0.0.1:9/x.weights", tmp_path / "x.weights", (10,), attempts=1, timeout=2)
    assert part.read_bytes() == b"abc"
    assert not (tmp_path / "x.weights").exists()


def test_zoo_name_fetches_through_the_mirror_into_the_cache(server, tmp_path, monkeypatch):
    handler, base = server
    entry = zoo.find("vgg-conv")
    assert entry is not None and entry.url == "https://pjreddie.com/media/files/vgg-conv.weights"
    assert entry.file_sizes() == (58_858_768, 58_858_772)
    handler.payload = b"\0" * 20 + b"\0" * (entry.file_sizes()[1] - 20)
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path))
    monkeypatch.setenv(zoo.MIRROR_ENV, base)
    path = zoo.fetch(entry)
    assert path == tmp_path / "weights" / "vgg-conv.weights"
    assert path.stat().st_size == entry.file_sizes()[1]
    assert zoo.fetch(entry) == path  # cached: no second request
    assert len(handler.requests) == 1
