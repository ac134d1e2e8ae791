"""A loopback HTTP(S) file server for the download tests: 127.0.0.1, a random port, one thread.

It behaves like the download sites that matter here: it can demand a ``Referer`` header (Huawei's
CANN site does), answers ``Range``/``If-Range`` with 206/416 (or ignores them, like some mirrors),
can drop a connection part-way, and records every request so tests can assert on headers. Used
as an HTTP proxy (absolute-URI request lines), it serves by path too and records the full URI.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]


@dataclass
class LoopbackServer:
    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    require_referer: str | None = None
    referer_prefix: str = "/"  # only paths under this prefix demand the Referer
    ignore_range: bool = False
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before hanging up (once)
    requests: list[Seen] = field(default_factory=list)
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        assert self._httpd is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> LoopbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

            def do_CONNECT(self) -> None:
                """Act as an HTTPS proxy: tunnel bytes to the requested host:port (loopback only)."""
                server.requests.append(Seen("CONNECT", self.path, dict(self.headers.items())))
                host, port = self.path.rsplit(":", 1)
                if host != "127.0.0.1":
                    self.send_error(403, "loopback only")
                    return
                upstream = socket.create_connection((host, int(port)), timeout=10)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                pair = [self.connection, upstream]
                with upstream:
                    while True:
                        readable, _, _ = select.select(pair, [], [], 10)
                        if not readable:
                            break
                        for src in readable:
                            data = src.recv(65536)
                            if not data:
                                self.close_connection = True
                                return
                            (upstream if src is self.connection else self.connection).sendall(data)

            def do_GET(self) -> None:
                server.requests.append(Seen("GET", self.path, dict(self.headers.items())))
                path = urlsplit(self.path).path
                wants_referer = server.require_referer and path.startswith(server.referer_prefix)
                if wants_referer and self.headers.get("Referer") != server.require_referer:
                    self.send_error(403, "Referer required")
                    return
                if path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                data = server.files[path]
                etag = server.etags.get(path)
                start = 0
                match = _RANGE.match(self.headers.get("Range", ""))
                if_range = self.headers.get("If-Range")
                if match and not server.ignore_range and (if_range is None or if_range == etag):
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                if etag:
                    self.send_header("ETag", etag)
                self.end_headers()
                cut = server.drop_after.pop(path, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                self.close_connection = True

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        if self.tls:
            httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
