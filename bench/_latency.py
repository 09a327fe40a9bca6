"""A proxy that adds latency to every request to an HTTP server, and counts the round trips a reader waited for.

Requests alone do not say how long a cold read takes on a far bucket: eight
requests sent together cost one round trip, eight sent one after the other
cost eight. The proxy sleeps ``latency`` seconds before forwarding each
request (as a distant store would answer later), and records when each request
arrived and when its answer left, so that :func:`sequential_round_trips` finds
the longest chain of requests each sent after the previous one was answered.

>>> sequential_round_trips([(0.0, 1.0), (0.0, 1.0), (1.1, 2.0), (2.1, 3.0), (1.2, 1.5)])
3
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class Forwarded:
    """One request the proxy forwarded: when it arrived and when its answer was sent (``time.time()``)."""

    method: str
    path: str
    start: float
    end: float


class LatencyProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (``host:port``), each request delayed by ``latency`` s."""

    def __init__(self, upstream: str, latency: float = 0.1):
        self.upstream, self.latency = upstream, latency
        self.forwarded: list[Forwarded] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep connections alive, as clients of a real bucket do

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                start = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(proxy.latency)
                if not hasattr(self, "upstream"):
                    self.upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                answer = self.upstream.getresponse()
                data = answer.read()
                self.send_response_only(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                self.wfile.flush()
                with proxy._lock:
                    proxy.forwarded.append(Forwarded(self.command, self.path, start, time.time()))

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def between(self, start: float, end: float) -> list[Forwarded]:
        """The requests that arrived from ``start`` on and were answered by ``end`` (``time.time()`` values)."""
        with self._lock:
            return [f for f in self.forwarded if f.start >= start and f.end <= end]


def sequential_round_trips(intervals: list[tuple[float, float]]) -> int:
    """The most requests in one chain where each starts after the one before ended: the round trips waited for."""
    chain: list[tuple[float, int]] = []  # (end, longest chain ending with that request), by end
    longest = 0
    for start, end in sorted(intervals):
        before = max((length for ended, length in chain if ended <= start), default=0)
        chain.append((end, before + 1))
        longest = max(longest, before + 1)
    return longest
