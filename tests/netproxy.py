"""A small authenticating HTTP proxy on loopback, standing in for a corporate proxy in tests.

It forwards plain ``GET http://...`` requests (apt) and tunnels ``CONNECT host:443`` (pip over
TLS), and refuses requests without the expected ``Proxy-Authorization``, so a build that passes
through it proves the proxy settings (with their password) really reached the build steps.
"""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = self.connection.recv(4096)
            if not chunk:
                return
            head += chunk
        header, _, rest = head.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if fields.get("proxy-authorization") != self.server.expected_auth:
            self.connection.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            self.server.refused += 1
            return
        self.server.used += 1
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host, int(port)), timeout=30)
            self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
        else:
            url = urllib.parse.urlsplit(target)
            upstream = socket.create_connection((url.hostname, url.port or 80), timeout=30)
            path = url.path + (f"?{url.query}" if url.query else "")
            kept = [line for line in lines[1:] if not line.lower().startswith(("proxy-", "connection:"))]
            request = [f"{method} {path or '/'} HTTP/1.1", *kept, "Connection: close", "", ""]
            upstream.sendall("\r\n".join(request).encode("latin-1") + rest)
        self._pipe(self.connection, upstream)

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 60)
                if not ready:
                    return
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        finally:
            b.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    expected_auth = ""
    used = 0
    refused = 0


@contextmanager
def auth_proxy(user: str, password: str) -> Iterator[tuple[str, _Server]]:
    """Run the proxy on 127.0.0.1 for the ``with`` block; yields its URL (with credentials) and server."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.expected_auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{user}:{password}@127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
