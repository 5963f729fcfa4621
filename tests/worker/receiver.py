"""A real HTTP receiver of webhook deliveries on loopback, answering a scripted sequence of
status codes (the last repeated), or never answering (``hang``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    codes: list[int]
    hang: threading.Event | None = None
    got: list[Received] = field(default_factory=list)


@contextmanager
def receiver(*codes: int, hang: bool = False) -> Iterator[Receiver]:
    """A receiver on ``127.0.0.1:<free port>``; its URL is ``/hook``."""
    state = Receiver(url="", codes=list(codes) or [200],
                     hang=threading.Event() if hang else None)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.got.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            if state.hang is not None:
                state.hang.wait(120)
                return
            code = state.codes.pop(0) if len(state.codes) > 1 else state.codes[0]
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hang is not None:
            state.hang.set()
        server.shutdown()
        server.server_close()
