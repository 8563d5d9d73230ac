"""Weight downloads (pooch: retries, checks, nothing half-kept), tested against a small HTTP server on 127.0.0.1
(never the internet); the bundled model needs no download."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from jaxdream.darknet import zoo
from jaxdream.errors import FetchError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


class _Handler(BaseHTTPRequestHandler):
    payload = PAYLOAD
    drop_first_after: int | None = None  # the first request: close after this many bytes
    requests: ClassVar[list[str]] = []  # the path of every request

    def do_GET(self):
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        limit = type(self).drop_first_after
        if limit is not None and len(type(self).requests) == 1:
            self.wfile.write(self.payload[:limit])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(self.payload)

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


def test_download_retries_after_a_dropped_connection(server, tmp_path):
    handler, base = server
    handler.drop_first_after = 30_000
    seen = []
    dest = zoo.download(f"{base}/x.weights", tmp_path / "x.weights", (len(PAYLOAD),), lambda d, t: seen.append(d))
    assert dest.read_bytes() == PAYLOAD
    assert len(handler.requests) == 2
    assert seen[-1] == len(PAYLOAD)
    assert [p.name for p in tmp_path.iterdir()] == ["x.weights"]  # no temp file left behind


def test_wrong_size_leaves_nothing_under_the_final_name(server, tmp_path):
    _, base = server
    with pytest.raises(FetchError, match="downloaded 102400 bytes, but the architecture needs 5"):
        zoo.download(f"{base}/x.weights", tmp_path / "x.weights", (5,))
    assert list(tmp_path.iterdir()) == []


def test_wrong_sha256_leaves_nothing(server, tmp_path):
    _, base = server
    with pytest.raises(FetchError, match="not the expected one"):
        zoo.download(f"{base}/x.weights", tmp_path / "x.weights", (len(PAYLOAD),), sha256="0" * 64, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_fails_in_one_line_and_keeps_nothing(tmp_path):
    with pytest.raises(FetchError, match="download failed after 2 attempts") as err:
        zoo.download("http://127.0.0.1:9/x.weights", tmp_path / "x.weights", (10,), retries=1, timeout=2)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_bundled_model_needs_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path))
    monkeypatch.setenv(zoo.MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens there
    entry = zoo.find("tiny")
    assert entry is not None and entry.bundled
    path = zoo.fetch(entry)
    assert path.is_file() and path.stat().st_size in entry.file_sizes()
    assert list(tmp_path.iterdir()) == []


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


# A server that never answers


def test_a_silent_weights_server_is_given_up_on_quickly_and_said_so(tmp_path):
    from jaxdream.darknet import zoo
    from jaxdream.errors import FetchError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held = []
    stop = threading.Event()

    def accept() -> None:  # answers nothing, ever
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    seen: list[tuple[int, int | None]] = []
    start = time.monotonic()
    try:
        with pytest.raises(FetchError, match="2 attempts"):
            zoo.download(f"http://127.0.0.1:{server.getsockname()[1]}/x.weights", tmp_path / "x.weights", (10,),
                         progress=lambda done, total: seen.append((done, total)), retries=1, timeout=1.0)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    assert time.monotonic() - start < 10
    assert seen and seen[0] == (0, None)
