"""A webhook receiver on 127.0.0.1 for tests: answers the status codes it is given, keeps
every request it got."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: answers ``codes`` in turn (then 200), keeps requests."""

    codes: list[int] = field(default_factory=list)
    requests: list[tuple[dict, bytes]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, n: int, deadline_s: float = 60.0) -> list[tuple[dict, bytes]]:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.requests) >= n, deadline_s), self.requests
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                code = state.codes.pop(0) if state.codes else 200
                state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                state.lock.notify_all()
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/facereel"
    yield state
    server.shutdown()
    server.server_close()
