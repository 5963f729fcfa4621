"""A stream server on an event loop of its own in a background thread, and synchronous
websocket helpers: lets hypothesis (which drives plain functions) and HTTP-style tests speak
to a real :class:`~stream.server.StreamServer` over real sockets."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from stream.server import StreamServer
from tests.stream.conftest import WAIT


class ThreadedServer:
    """A :class:`StreamServer` on 127.0.0.1:<free port>, served by a thread of its own
    (``membership_refresh`` seconds between its periodic re-judgings of every connection)."""

    def __init__(self, *, membership_refresh: float = 0.5) -> None:
        self.membership_refresh = membership_refresh
        self.ready = threading.Event()
        self.server: StreamServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True,
                                       name="fuzzed-stream-server")

    async def _main(self) -> None:
        async with StreamServer(host="127.0.0.1", port=0, auth_timeout=2.0,
                                membership_refresh=self.membership_refresh,
                                block_ms=200) as server:
            self.server, self.loop, self.stop = server, asyncio.get_running_loop(), asyncio.Event()
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        assert self.ready.wait(WAIT), "stream server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(WAIT)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}/sync"

    def healthz(self) -> int:
        assert self.server is not None
        url = f"http://127.0.0.1:{self.server.port}/healthz"
        with urllib.request.urlopen(url, timeout=WAIT) as r:
            return int(r.status)


def open_client(url: str, jwt: str | None, *, headers: dict[str, str] | None = None
                ) -> ClientConnection:
    """Connect (with extra upgrade ``headers``); with ``jwt``, authenticate by message and
    check the reply."""
    ws = connect(url, proxy=None, compression=None, max_size=None, open_timeout=WAIT,
                 additional_headers=headers)
    if jwt is not None:
        ws.send(json.dumps({"op": "auth", "jwt": jwt}))
        reply = json.loads(ws.recv(timeout=WAIT))
        assert reply["op"] == "auth" and reply["ok"] is True, reply
    return ws


def reply_or_close(ws: ClientConnection) -> dict[str, Any] | int:
    """The next message that is not a sync frame, or the close code if the server closed."""
    try:
        while True:
            msg = json.loads(ws.recv(timeout=WAIT))
            if msg.get("op") != "sync":
                return dict(msg)
    except ConnectionClosed:
        assert ws.close_code is not None
        return ws.close_code


