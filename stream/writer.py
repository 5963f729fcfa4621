"""Writing events to websocket connections without a task per connection.

After the hub routed a batch of events, each connection whose outbox became non-empty is
flushed synchronously (:meth:`Writer.flush`): the frame goes straight into the transport,
serialised once and shared by every connection that gets the identical batch.  A connection
that keeps up therefore gets every event, without a task of its own.  Only a connection whose
transport is congested (more than ``write_limit`` bytes unsent) gets a writer task, which
awaits the drain; meanwhile its outbox coalesces progress events, and if it still overflows
the hub marks it slow and the server closes it with 4008 (SPEC §8.5).  An idle connection
costs the websockets handler (and keepalive) task and a small :class:`Peer`, nothing else:
about 18 KiB RSS each at 10,000 connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from bulkjobs.synclog import Item, count_events
from bulkjobs.tokens import Claims
from stream.fanout import Subscriber, framed, frames


class Peer(Subscriber):
    """A :class:`Subscriber` bound to its websocket (its transport and protocol kept at hand
    for the write loop: they do not change during a connection's life)."""

    __slots__ = ("ws", "claims", "transport", "protocol", "writer", "drained")

    def __init__(self, ws: ServerConnection, claims: Claims, **kwargs: Any) -> None:
        super().__init__(user=claims.user, ops=claims.ops, **kwargs)
        self.ws = ws
        #: The token the connection authenticated with, as the database backed it last.
        self.claims = claims
        self.transport = ws.transport
        self.protocol = ws.protocol
        self.writer: asyncio.Task[None] | None = None
        self.drained: asyncio.Event | None = None


class Writer:
    """Writes what the hub queued or routed directly to the peers' sockets, and counts the
    events written (``deliveries``)."""

    def __init__(self, *, write_limit: int) -> None:
        self.write_limit = write_limit
        self.deliveries = 0

    def direct(self, events: list[Item], peers: list[Peer]) -> None:
        """Write one batch to connections that all get exactly it and have nothing queued
        (the hub's direct connections): the frames are built once and written to each
        transport in turn.  A connection whose transport is over ``write_limit`` — before the
        batch, or between two of its frames (a batch of packed record events may be many
        frames) — gets the rest of the batch queued and a writer task instead, as
        :meth:`flush` would: a batch never piles up in a slow connection's buffer."""
        data = _encode(events)
        limit = self.write_limit
        open_ = State.OPEN
        for peer in peers:
            transport = peer.transport
            if transport.get_write_buffer_size() > limit:
                self._congest(peer, events)  # counted by the writer when it sends them
            elif peer.protocol.state is open_:  # closing connections are skipped
                start = 0
                for chunk, end, n in data:
                    if start and transport.get_write_buffer_size() > limit:
                        self._congest(peer, events[start:])
                        break
                    transport.write(chunk)
                    self.deliveries += n
                    start = end

    def _congest(self, peer: Peer, events: list[Item]) -> None:
        """Queue ``events`` for a direct connection whose socket is not keeping up, and start
        its writer."""
        peer.congested = True
        peer.requeue(events)
        peer.writer = asyncio.create_task(self._write(peer))

    def flush(self, peers: list[Any]) -> None:
        """Write what the peers have queued, without waiting (see the module docstring)."""
        # Connections that got the very same batch share one frame (and one encoding), built
        # for the first of them; each connection is written as soon as it is reached, so the
        # first subscribers do not wait for the whole list to be sorted out first.
        encoded: dict[tuple[int, ...], tuple[list[Item], list[tuple[bytes, int, int]]]] = {}
        for peer in peers:
            if peer.writer is not None or peer.slow:
                continue  # a running writer takes the new events with its next batch
            ws = peer.ws
            transport = ws.transport
            if transport.get_write_buffer_size() > self.write_limit:
                peer.congested = True
                peer.writer = asyncio.create_task(self._write(peer))
                continue
            events = peer.take()
            if not events:
                continue
            key = tuple(map(id, events))
            shared = encoded.get(key)
            if shared is None:
                # Connections that are closing are skipped as broadcast() would.  The events
                # are kept with their bytes so that their ids, the key, stay theirs for the
                # whole flush.
                shared = encoded[key] = (events, _encode(events))
            if ws.protocol.state is State.OPEN:
                for data, _, _ in shared[1]:
                    transport.write(data)
            self.deliveries += count_events(events)

    async def _write(self, peer: Peer) -> None:
        """Writer of a congested connection: waits for the socket to drain between batches."""
        try:
            while not peer.slow:
                events = peer.take()
                if not events:
                    break
                for frame in frames(events):
                    await peer.ws.send(frame)
                self.deliveries += count_events(events)
        except ConnectionClosed:
            pass
        finally:
            peer.writer = None
            peer.congested = False
            if peer.drained is not None:
                peer.drained.set()

    async def drain(self, peer: Peer) -> None:
        """Flush and wait until everything queued for ``peer`` is handed to the socket."""
        self.flush([peer])
        while peer.writer is not None and not peer.slow:
            peer.drained = asyncio.Event()
            await peer.drained.wait()
            peer.drained = None
            self.flush([peer])


def _encode(events: list[Item]) -> list[tuple[bytes, int, int]]:
    """The websocket frames carrying ``events``, as bytes on the wire, each with the index in
    ``events`` where the next frame starts and the number of events it carries.  Server
    frames are unmasked and we negotiate no extension, so the bytes are the same for every
    connection: serialise once, write to each transport (``websockets.broadcast`` would
    rebuild the frame per connection).  Never fragmented, so the protocol's state machine
    has nothing to track."""
    out = []
    start = 0
    for frame, end in framed(events):
        out.append((Frame(Opcode.TEXT, frame.encode()).serialize(mask=False), end,
                    count_events(events[start:end])))
        start = end
    return out
