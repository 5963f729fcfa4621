"""A real HTTP receiver of webhook deliveries on loopback, answering a scripted sequence (the
last answer repeated): a status code, :data:`DRIP` (an answer sent one byte at a time, too
slowly for any deadline, complete and 200 in the end) or :data:`DROP` (the connection closed
without an answer); or never answering (``hang``).  With ``per_delivery`` each delivery id
goes through the script from its start."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DRIP, DROP = "drip", "drop"
#: What DRIP sends, a byte every :data:`DRIP_PAUSE` seconds (some 25 s in all).
DRIP_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
               + b"".join(b"X-Pad-%d: slow\r\n" % i for i in range(14)) + b"\r\n")
DRIP_PAUSE = 0.1

Answer = int | str


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answer: Answer | None  # None: hung


@dataclass
class Receiver:
    url: str
    answers: list[Answer]
    per_delivery: bool = False
    hang: threading.Event | None = None
    got: list[Received] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    seen: dict[str, int] = field(default_factory=dict)

    def next_answer(self, delivery: str) -> Answer:
        n = self.seen.get(delivery if self.per_delivery else "", 0)
        self.seen[delivery if self.per_delivery else ""] = n + 1
        return self.answers[min(n, len(self.answers) - 1)]


@contextmanager
def receiver(*answers: Answer, hang: bool = False, per_delivery: bool = False,
             host: str = "127.0.0.1") -> Iterator[Receiver]:
    """A receiver on ``127.0.0.1:<free port>``; its URL is ``http://<host>:<port>/hook``."""
    state = Receiver(url="", answers=list(answers) or [200], per_delivery=per_delivery,
                     hang=threading.Event() if hang else None)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                answer = (None if state.hang is not None
                          else state.next_answer(headers.get("x-bulkjobs-delivery", "")))
                state.got.append(Received(headers, body, answer))
            if answer is None:
                assert state.hang is not None
                state.hang.wait(120)
            elif answer == DROP:
                return
            elif answer == DRIP:
                self.drip()
            else:
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

        def drip(self) -> None:
            try:
                for i in range(len(DRIP_ANSWER)):
                    if state.stop.wait(DRIP_PAUSE):
                        return
                    self.wfile.write(DRIP_ANSWER[i:i + 1])
            except OSError:  # the sender gave up and closed the connection
                return

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://{host}:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        if state.hang is not None:
            state.hang.set()
        server.shutdown()
        server.server_close()

