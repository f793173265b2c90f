"""A stand-in for Sentry's ingest: an HTTP server on 127.0.0.1 that keeps envelopes."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Envelopes:
    """Collects every envelope posted to it, decoded into its items."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.add(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server.server_address[1]}/1"

    def __enter__(self) -> Envelopes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, body: bytes) -> None:
        """Split an envelope: a header line, then (item header, payload) pairs."""
        _, _, rest = body.partition(b"\n")
        found = []
        while rest.strip():
            line, _, rest = rest.partition(b"\n")
            header = json.loads(line)
            length = header.get("length")
            if length is None:
                payload, _, rest = rest.partition(b"\n")
            else:
                payload, rest = rest[:length], rest[length + 1 :]
            if header.get("type") in ("event", "transaction"):
                found.append((header["type"], json.loads(payload)))
        with self._lock:
            self.items.extend(found)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [item for t, item in self.items if t == kind]
