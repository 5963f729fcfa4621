"""A lean HTTP/1.1 load generator for the API benchmarks, and process CPU accounting.

``httpx`` spends about 2 ms of CPU per request, as much as the web process it is measuring
on a two-core machine, so :func:`hammer` talks HTTP itself, the way ``wrk`` does: keep-alive
connections, one request written whole, its answer read by ``Content-Length``.  It speaks
only what the benchmarks send (a fixed POST, answers with a ``Content-Length``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any


def post_bytes(host: str, port: int, path: str, body: Any, headers: dict[str, str]) -> bytes:
    """One serialised ``POST path`` with a JSON body."""
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def hammer(host: str, port: int, request: bytes, *, requests: int,
                 concurrency: int) -> tuple[float, dict[int, int]]:
    """Send ``request`` ``requests`` times over ``concurrency`` keep-alive connections, each
    waiting for its answer before the next; requests per second, and the answers' statuses
    with their counts."""
    left = requests
    statuses: dict[int, int] = {}

    async def connection() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while left > 0:
                left -= 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                at = head.lower().index(b"content-length:") + 15
                await reader.readexactly(int(head[at:head.index(b"\r\n", at)]))
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start), statuses


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (alive ones: e.g. uvicorn's workers)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
