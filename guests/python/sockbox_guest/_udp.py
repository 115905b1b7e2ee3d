"""UDP: a `DatagramEndpoint` (a bound socket with its datagram streams, not connected to one
peer) and the loop that serves one for `serve_udp`, sending the replies to a batch of
datagrams in one host call."""

import inspect
import sys
import traceback

from componentize_py_types import Err
from wit_world.imports import udp, udp_create_socket

from ._addresses import from_wasi, show, to_wasi, wasi_and_shown
from ._errors import complain, socket_error
from ._loop import when_ready
from ._resources import drop, owner_of_streams
from ._sockets import bind, open_socket

MAX_DATAGRAM = 65_507  # the largest UDP payload over IPv4


class DatagramEndpoint:
    """A bound UDP socket with its datagram streams, not connected to one peer."""

    def __init__(self, socket, incoming, outgoing):
        self._socket = socket
        self._incoming = incoming
        self._outgoing = outgoing
        self._receivable, self._sendable, self._release = owner_of_streams(
            self, socket, incoming, outgoing
        )
        self.address = from_wasi(socket.local_address())

    @classmethod
    async def bind(cls, address):
        wasi_address, shown = wasi_and_shown(address)

        async def setup(socket, pollable):
            await bind(socket, pollable, wasi_address, f"bind UDP {shown}")
            return socket.stream(None)

        socket, pollable, (incoming, outgoing) = await open_socket(
            udp_create_socket.create_udp_socket,
            wasi_address,
            f"create a UDP socket for {shown}",
            setup,
            f"bind UDP {shown}",
        )
        drop(pollable)
        return cls(socket, incoming, outgoing)

    async def receive(self, max_datagrams=64):
        """The next datagrams (at least one) as `(data, (host, port))` pairs."""
        while True:
            try:
                datagrams = self._incoming.receive(max_datagrams)
            except Err as e:
                raise socket_error(e, f"receive on {show(self.address)}") from None
            if datagrams:
                return [(d.data, from_wasi(d.remote_address)) for d in datagrams]
            await when_ready(self._receivable)

    async def send(self, data, address):
        """Sends one datagram to `address`, waiting while the host's queue is full."""
        await self.send_many([(data, address)])

    async def send_many(self, datagrams):
        """Sends `(data, address)` datagrams in order, as many per host call as it takes.
        A datagram the host refuses (too large, a denied address) raises `OSError` after
        the ones before it went out (their number in `.sent`); the ones after it are not
        sent."""
        pending = [udp.OutgoingDatagram(data, to_wasi(address)) for data, address in datagrams]
        done = 0
        while pending:
            try:
                room = self._outgoing.check_send()
                sent = self._outgoing.send(pending[:room]) if room else 0
            except Err as e:
                # WASI reports an error only when not one datagram of the call went out.
                address = from_wasi(pending[0].remote_address)
                error = socket_error(e, f"send to {show(address)}")
                error.sent = done
                raise error from None
            del pending[:sent]
            done += sent
            if pending:
                await when_ready(self._sendable)

    def close(self):
        self._receivable = self._sendable = self._incoming = self._outgoing = self._socket = None
        self._release()


async def serve_datagrams(endpoint, handler):
    """Answers every datagram on `endpoint` with `handler(data, peer)` (or its awaited value)
    unless that is None; never returns (cancel it)."""
    while True:
        replies = []
        for data, peer in await endpoint.receive():
            try:
                reply = handler(data, peer)
                if inspect.isawaitable(reply):
                    reply = await reply
            except Exception:
                print(f"datagram from {peer}: handler failed:", file=sys.stderr)
                traceback.print_exc()
                continue
            if reply is not None:
                replies.append((reply, peer))
        # The replies to one batch go out together: fewer host calls per datagram.
        while replies:
            try:
                await endpoint.send_many(replies)
                break
            except OSError as e:
                # One reply refused (too large, say): skip it, send the rest.
                refused = getattr(e, "sent", 0)
                complain(f"reply to {replies[refused][1]}: {e}")
                replies = replies[refused + 1 :]
