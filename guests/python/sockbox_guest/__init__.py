"""Write a sockbox guest in Python: asyncio-style servers over the sandbox's WASI 0.2 sockets.

    from sockbox_guest import Guest, serve_tcp

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    class Run(Guest):                  # the component's `wasi:cli/run` export
        async def main(self):
            await serve_tcp(echo)

`serve_tcp` listens on every address the host granted with `--listen`, says ready, runs the
handler for each client as its own task (socketserver's ThreadingMixIn, without threads), and
returns once the host asks the guest to stop. `serve_udp` does the same for `--udp` datagrams;
`serve` does both in one guest. Errors are `OSError`s: a denied operation raises
`PermissionError`, with the WASI code in `.wasi_code`.
"""

import asyncio
import inspect
import sys
import time
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import control

from ._loop import PollLoop, when_ready
from ._net import (
    MAX_DATAGRAM,
    Connection,
    DatagramEndpoint,
    Listener,
    Reader,
    Writer,
    _drop,
    connect,
    from_wasi,
    resolve,
)

__all__ = [
    "DRAIN_PERIOD",
    "MAX_DATAGRAM",
    "DatagramEndpoint",
    "Guest",
    "Listener",
    "Reader",
    "Writer",
    "listen_addresses",
    "open_connection",
    "ready",
    "run",
    "serve",
    "serve_tcp",
    "serve_udp",
    "shutdown_requested",
    "udp_addresses",
]

# How long a shutdown lets connections in the middle of a request finish: well inside the
# 5 s that `sockbox run` grants a guest to stop (the Rust SDK's DRAIN_PERIOD).
DRAIN_PERIOD = 3.0
# How long a finished connection may take to send what its handler wrote before it is dropped.
LINGER = 30.0


# --- the sandbox's control interface -----------------------------------------------------


def listen_addresses():
    """The TCP addresses granted with `--listen`, as `(host, port)` tuples."""
    return [from_wasi(a) for a in control.listen_addresses()]


def udp_addresses():
    """The UDP addresses granted with `--udp`, as `(host, port)` tuples."""
    return [from_wasi(a) for a in control.udp_addresses()]


def ready():
    """Tells the host every socket is set up (its `ready` line). Later calls do nothing."""
    control.ready()


async def shutdown_requested():
    """Returns once the host wants the guest to stop (SIGINT, SIGTERM, its supervisor)."""
    pollable = control.shutdown()
    try:
        await when_ready(pollable)
    finally:
        _drop(pollable)


# --- running ----------------------------------------------------------------------------


def run(main):
    """Runs the coroutine `main` to completion on a fresh guest event loop."""
    loop = PollLoop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class Guest(exports.Run):
    """Base class of a guest's `Run` export: implement `async def main(self)`.

    An exception out of `main` is printed to stderr and the guest exits with failure."""

    async def main(self):
        raise NotImplementedError("a sockbox guest implements `async def main(self)`")

    def run(self):
        try:
            run(self.main())
        except SystemExit:
            raise
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            raise Err(None)
        finally:
            sys.stdout.flush()


async def open_connection(host, port):
    """Connects to `host:port` and returns `(reader, writer)`, as `asyncio.open_connection`.
    Needs a `tcp-connect` grant (and a `dns` grant if `host` is a name)."""
    addresses = await resolve(host)
    if not addresses:
        raise OSError(f"connect to {host}:{port}: the name has no address")
    error = None
    for ip in addresses:
        try:
            connection = await connect((str(ip), port))
        except OSError as e:
            error = e
            continue
        return connection.streams()
    raise error


# --- servers ----------------------------------------------------------------------------


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
    """`serve_tcp` and `serve_udp` at once, for a guest that speaks both (say ready once)."""
    if tcp is None and udp is None:
        raise TypeError("serve() needs a tcp handler, a udp handler, or both")
    tcp_addresses = control.listen_addresses() if tcp is not None else []
    udp_addresses = control.udp_addresses() if udp is not None else []
    if not tcp_addresses and not udp_addresses:
        wanted = [flag for flag, h in (("--listen ADDR", tcp), ("--udp ADDR", udp)) if h]
        raise OSError(f"no address granted to serve on (run with {' and/or '.join(wanted)})")

    listeners, endpoints = [], []
    server = _Server(tcp, udp)
    try:
        for address in tcp_addresses:
            listeners.append(await Listener.bind(address))
        for address in udp_addresses:
            endpoints.append(await DatagramEndpoint.bind(address))
        control.ready()

        loop = asyncio.get_running_loop()
        loops = [loop.create_task(server.accept_loop(listener)) for listener in listeners]
        loops += [loop.create_task(server.datagram_loop(endpoint)) for endpoint in endpoints]
        shutdown = control.shutdown()
        stop = when_ready(shutdown)
        try:
            await asyncio.wait([stop, *loops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            _drop(shutdown)
            for task in loops:
                task.cancel()
            results = await asyncio.gather(*loops, return_exceptions=True)
            await server.drain()
        for result in results:
            if isinstance(result, Exception):
                raise result
    finally:
        for socket in (*listeners, *endpoints):
            socket.close()


class _Server:
    def __init__(self, tcp, udp):
        self.tcp = tcp
        self.udp = udp
        self.connections = {}  # task -> the connection's Reader
        self.last_complaint = 0.0

    def complain(self, text):
        # A flood of failing clients must not flood the host's log: one line a second.
        now = time.monotonic()
        if now - self.last_complaint >= 1.0:
            self.last_complaint = now
            print(text, file=sys.stderr, flush=True)

    async def accept_loop(self, listener):
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection = await listener.accept()
            except OSError as e:
                # A client that reset before we took it, or the guest's socket limit: the host
                # has refused that client; keep serving the others.
                self.complain(f"accept: {e}")
                continue
            reader, writer = connection.streams()
            task = loop.create_task(self.handle(connection, reader, writer))
            self.connections[task] = reader
            task.add_done_callback(self.forget)

    def forget(self, task):
        self.connections.pop(task, None)

    async def handle(self, connection, reader, writer):
        try:
            try:
                await self.tcp(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                return  # the client left mid-conversation: nothing to answer
            except asyncio.LimitOverrunError as e:
                self.complain(f"connection from {connection.peer}: {e}; closed")
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

    async def datagram_loop(self, endpoint):
        while True:
            replies = []
            for data, peer in await endpoint.receive():
                try:
                    reply = self.udp(data, peer)
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
                    self.complain(f"reply to {replies[refused][1]}: {e}")
                    replies = replies[refused + 1 :]

    async def drain(self):
        """Ends idle connections now, lets the others finish for up to DRAIN_PERIOD, then
        cancels them (each task still closes its socket in order)."""
        tasks = list(self.connections)
        for reader in self.connections.values():
            reader._stop()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_PERIOD)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
