"""TCP and UDP servers: `start_server` and its `Server`, as asyncio's, and `serve`,
`serve_tcp` and `serve_udp`, the Rust SDK's one-call servers. All of them serve each client
as its own task (socketserver's ThreadingMixIn, without threads) and stop as a sockbox guest
must: when the host asks, they stop accepting, end idle connections at once and give the
others DRAIN_PERIOD."""

import asyncio
import ipaddress
import sys
import traceback

from wit_world.imports import control

from ._addresses import from_wasi
from ._control import ready, until_shutdown
from ._dns import resolve
from ._errors import complain
from ._streams import LINE_LIMIT
from ._tcp import Listener
from ._udp import DatagramEndpoint, serve_datagrams

# How long a shutdown lets connections in the middle of a request finish: well inside the
# 5 s that `sockbox run` grants a guest to stop (the Rust SDK's DRAIN_PERIOD).
DRAIN_PERIOD = 3.0
# How long a finished connection may take to send what its handler wrote before it is dropped.
LINGER = 30.0


async def start_server(
    client_connected_cb, host=None, port=None, *, limit=LINE_LIMIT, start_serving=True
):
    """Listens and returns a `Server` that runs `await client_connected_cb(reader, writer)`
    for every client, as `asyncio.start_server`. The callback is a coroutine function; when
    it returns, what it wrote is sent and the connection closed.

    `host` and `port` omitted (None) mean every address the host granted with `--listen`;
    only one of them given picks the granted addresses with that host (a name or IP, or a
    list of them) or that port. Both given: exactly that address, which a grant must allow
    (else `PermissionError`). Then `await server.serve_forever()` says ready and serves until
    the host asks the guest to stop."""
    addresses = await _addresses_to_listen_on(host, port)
    listeners = []
    try:
        for address in addresses:
            listeners.append(await Listener.bind(address))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    server = Server(client_connected_cb, listeners, limit)
    if start_serving:
        await server.start_serving()
    return server


async def _addresses_to_listen_on(host, port):
    """What `start_server` binds: `host` and `port` against the `--listen` grants."""
    hosts = [] if host in (None, "") else [host] if isinstance(host, str) else list(host)
    ips = [ip for name in hosts for ip in await resolve(name)]
    if hosts and port is not None:
        return [(str(ip), port) for ip in ips]
    granted = control.listen_addresses()
    matching = [
        address
        for address in granted
        if (not hosts or ipaddress.ip_address(from_wasi(address)[0]) in ips)
        and (port is None or from_wasi(address)[1] == port)
    ]
    if not matching:
        wanted = "" if not granted else f" for host {host!r}, port {port!r}"
        raise OSError(f"no address granted to listen on{wanted} (run with --listen ADDR)")
    return matching


class Server:
    """A TCP server, as `asyncio.Server`: `sockets`, `serve_forever()`, `close()`,
    `wait_closed()`, `is_serving()`, `async with server:`. What `start_server` returns."""

    def __init__(self, client_connected_cb, listeners, limit=LINE_LIMIT):
        self._callback = client_connected_cb
        self._listeners = listeners
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._accepting = []  # one task per listener
        self._connections = {}  # task -> the connection's reader
        self._closed = self._loop.create_future()

    @property
    def sockets(self):
        """The listening sockets; `getsockname()` gives each one's address and real port."""
        return tuple(self._listeners) if not self._closed.done() else ()

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return bool(self._accepting) and not self._closed.done()

    async def start_serving(self):
        """Starts accepting clients (`start_server` already does unless told not to)."""
        if self._closed.done():
            raise RuntimeError(f"{self!r} is closed")
        if not self._accepting:
            accept = self._accept
            self._accepting = [self._loop.create_task(accept(each)) for each in self._listeners]

    async def serve_forever(self):
        """Says ready to the host (`sockbox_guest.ready()`), then serves until the host asks
        the guest to stop; then closes the server, ends idle connections at once, lets the
        others finish for up to DRAIN_PERIOD and returns. Cancelling it closes the server."""
        await self.start_serving()
        ready()
        try:
            await until_shutdown(self._accepting)
        finally:
            self.close()
        failure = await self._stopped()
        if failure is not None:
            raise failure

    def close(self):
        """Stops accepting and closes the listening sockets; connections go on."""
        if self._closed.done():
            return
        self._closed.set_result(None)
        for task in self._accepting:
            # Cancelling drops the task's wait on its listener's pollable at once, so the
            # listener may go now.
            task.cancel()
        for listener in self._listeners:
            listener.close()

    async def wait_closed(self):
        """Waits until `close()` has been called and every connection has ended."""
        await asyncio.shield(self._closed)
        while self._connections:
            await asyncio.wait(list(self._connections))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self.close()
        await self.wait_closed()

    async def _stopped(self):
        """After `close()` at shutdown: drains the connections and returns what ended an
        accept loop, if anything did."""
        results = await asyncio.gather(*self._accepting, return_exceptions=True)
        await self._drain()
        return next((r for r in results if isinstance(r, Exception)), None)

    async def _accept(self, listener):
        while True:
            try:
                connection = await listener.accept()
            except OSError as e:
                # A client that reset before we took it, or the guest's socket limit: the host
                # has refused that client; keep serving the others.
                complain(f"accept: {e}")
                continue
            reader, writer = connection.streams(self._limit)
            task = self._loop.create_task(self._handle(connection, reader, writer))
            self._connections[task] = reader
            task.add_done_callback(self._forget)

    def _forget(self, task):
        self._connections.pop(task, None)

    async def _handle(self, connection, reader, writer):
        try:
            try:
                await self._callback(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                return  # the client left mid-conversation: nothing to answer
            except asyncio.LimitOverrunError as e:
                complain(f"connection from {connection.peer}: {e}; closed")
                return
            except Exception:
                print(f"connection from {connection.peer}: handler failed:", file=sys.stderr)
                traceback.print_exc()
                return
            # Send what the handler wrote before the socket goes, as a closing socket would.
            try:
                await asyncio.wait_for(writer._flushed(), LINGER)
            except (ConnectionError, TimeoutError):
                pass
        finally:
            connection.close()

    async def _drain(self):
        """Ends idle connections now, lets the others finish for up to DRAIN_PERIOD, then
        cancels them (each task still closes its socket in order)."""
        tasks = list(self._connections)
        for reader in self._connections.values():
            reader._stop()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_PERIOD)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def serve_tcp(handler):
    """Serves `await handler(reader, writer)` for every client on every `--listen` address,
    until the host asks the guest to stop."""
    await serve(tcp=handler)


async def serve_udp(handler):
    """Serves every datagram on every `--udp` address: `handler(data, peer)` returns the reply
    (bytes, sent back to `peer`) or None; it may be a coroutine function. Datagrams on one
    socket are handled one after the other."""
    await serve(udp=handler)


async def serve(tcp=None, udp=None):
    """`serve_tcp` and `serve_udp` at once, for a guest that speaks both (says ready once)."""
    if tcp is None and udp is None:
        raise TypeError("serve() needs a tcp handler, a udp handler, or both")
    tcp_addresses = control.listen_addresses() if tcp is not None else []
    udp_addresses = control.udp_addresses() if udp is not None else []
    if not tcp_addresses and not udp_addresses:
        wanted = [flag for flag, h in (("--listen ADDR", tcp), ("--udp ADDR", udp)) if h]
        raise OSError(f"no address granted to serve on (run with {' and/or '.join(wanted)})")

    server = Server(tcp, [])
    endpoints = []
    try:
        for address in tcp_addresses:
            server._listeners.append(await Listener.bind(address))
        for address in udp_addresses:
            endpoints.append(await DatagramEndpoint.bind(address))
        ready()
        await server.start_serving()
        loop = asyncio.get_running_loop()
        datagrams = [loop.create_task(serve_datagrams(e, udp)) for e in endpoints]
        try:
            await until_shutdown([*server._accepting, *datagrams])
        finally:
            server.close()
            for task in datagrams:
                task.cancel()
            results = await asyncio.gather(*datagrams, return_exceptions=True)
            results.append(await server._stopped())
        for result in results:
            if isinstance(result, Exception):
                raise result
    finally:
        server.close()
        for endpoint in endpoints:
            endpoint.close()
