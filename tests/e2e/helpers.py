"""Client-side helpers for end-to-end tests: the HTTP API and the websocket protocol, spoken
as an outside client would (httpx and the plain ``websockets`` client)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect


class Api:
    """A Unicat-dialect client that keeps the renewed JWT, as the official client does."""

    def __init__(self, base: str, project: str) -> None:
        self.base, self.project = base, project
        self.jwt = ""
        self.http = httpx.Client(base_url=base, timeout=30)

    def auth(self, api_key: str) -> dict[str, Any]:
        return self.call("auth", {"api_key": api_key})

    def call(self, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        path = endpoint if endpoint.startswith("/") else f"/api/p/{self.project}/{endpoint}"
        headers = {"Authorization": f"Bearer {self.jwt}"} if self.jwt else {}
        r = self.http.post(path, json=body or {}, headers=headers)
        if "authorization" in r.headers:
            self.jwt = r.headers["authorization"]
        payload = r.json()
        payload["_status"] = r.status_code
        return payload

    def cc_cursor(self) -> int:
        return int(self.call("/sync/cursors")["result"]["cc.cursor"])

    def queue(self, endpoint: str, selection: list[Any]) -> str:
        answer = self.call(endpoint, {"selection": selection})
        assert answer["success"], answer
        return str(answer["result"]["job.token"])

    def events_since(self, cc_cursor: int) -> list[dict[str, Any]]:
        """Every cc event after the cursor, over HTTP, following ``warning`` pages."""
        out: list[dict[str, Any]] = []
        while True:
            res = self.call("/sync/get", {"cc_cursor": cc_cursor})["result"]
            out += res["sync"]
            if res["sync"]:
                cc_cursor = res["sync"][-1]["cursor"]
            if "warning" not in res:
                return out


class Subscriber:
    """One websocket connection to the stream server, speaking SPEC §8."""

    def __init__(self, url: str, jwt: str) -> None:
        self.url, self.jwt = url, jwt
        self.ws: Any = None
        self.events: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []

    async def __aenter__(self) -> Subscriber:
        self.ws = await connect(self.url)
        await self.ws.send(json.dumps({"op": "auth", "jwt": self.jwt}))
        reply = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert reply.get("op") == "auth" and reply.get("ok"), reply
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def subscribe(self, project: str, **kw: Any) -> dict[str, Any]:
        await self.ws.send(json.dumps({"op": "subscribe", "project": project, **kw}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if msg.get("op") == "sync":
                self.events += msg["sync"]
                continue
            assert msg.get("op") == "subscribed", msg
            return msg

    async def until(self, predicate: Any, timeout: float = 60) -> list[dict[str, Any]]:
        """Receive until ``predicate(events)`` holds; returns all events so far."""
        async def loop() -> None:
            while not predicate(self.events):
                msg = json.loads(await self.ws.recv())
                if msg.get("op") == "sync":
                    self.events += msg["sync"]
                else:
                    self.replies.append(msg)
        await asyncio.wait_for(loop(), timeout)
        return self.events


def terminal_of(token: str):  # type: ignore[no-untyped-def]
    """Predicate: the job's terminal event has arrived."""
    return lambda events: any(
        e["data_key"] == token and e["data"]["status"] in ("done", "rejected") for e in events
    )


def job_events(events: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("data_type") == "jobs" and e["data_key"] == token]


def assert_lifecycle(events: list[dict[str, Any]], token: str, total: int) -> None:
    """The exact event sequence of a job that ends done (SPEC §6, §7)."""
    assert events, "no events"
    assert all(e["type"] == "cc" and e["data_key"] == token for e in events)
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(set(cursors)), "cursors must strictly increase"
    first, second, last = events[0], events[1], events[-1]
    assert (first["action"], first["data"]["status"]) == ("INSERT", "queued")
    assert all(e["action"] == "UPDATE" for e in events[1:])
    assert second["data"]["status"] == "processing"
    assert second["data"]["info"]["total"] == second["data"]["info"]["remaining"] == total
    assert last["data"]["status"] == "done"
    assert last["data"]["info"]["remaining"] == 0 and last["data"]["info"]["total"] == total
    middle = events[1:-1]
    assert all(e["data"]["status"] == "processing" for e in middle)
    remaining = [e["data"]["info"]["remaining"] for e in events[1:]]
    assert remaining == sorted(remaining, reverse=True), "remaining never goes up"
    assert sum(e["data"]["status"] in ("done", "rejected") for e in events) == 1
