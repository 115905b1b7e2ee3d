"""TCP sockets: a `Listener` on a granted address, a `Connection` that owns a connected socket
and its two streams, and the client side (`connect`, `open_connection`)."""

from componentize_py_types import Err
from wit_world.imports import tcp, tcp_create_socket
from wit_world.imports.network import ErrorCode

from ._addresses import from_wasi, show, wasi_and_shown
from ._dns import resolve
from ._errors import socket_error
from ._loop import when_ready
from ._resources import drop, network, owner, owner_of_streams
from ._sockets import bind, finish, open_socket
from ._streams import LINE_LIMIT, StreamReader, StreamWriter


class Listener:
    """A listening TCP socket on a granted address (what `Server.sockets` holds)."""

    def __init__(self, socket, pollable):
        self._release = owner(self, pollable, socket)
        self._socket = socket
        self._pollable = pollable
        self.address = from_wasi(socket.local_address())

    @classmethod
    async def bind(cls, address):
        wasi_address, shown = wasi_and_shown(address)

        async def setup(socket, pollable):
            await bind(socket, pollable, wasi_address, f"bind {shown}")
            socket.start_listen()
            await finish(pollable, socket.finish_listen, f"listen on {shown}")

        socket, pollable, _ = await open_socket(
            tcp_create_socket.create_tcp_socket,
            wasi_address,
            f"create a TCP socket for {shown}",
            setup,
            f"listen on {shown}",
        )
        return cls(socket, pollable)

    def getsockname(self):
        """The address it listens on, with the real port (as `socket.getsockname`)."""
        return self.address

    async def accept(self):
        """The next client as a `Connection`. Errors other than would-block are raised (a
        client that reset before it was accepted, the guest's socket limit)."""
        while True:
            try:
                client, input, output = self._socket.accept()
            except Err as e:
                if e.value == ErrorCode.WOULD_BLOCK:
                    await when_ready(self._pollable)
                    continue
                raise socket_error(e, f"accept on {show(self.address)}") from None
            return Connection(client, input, output)

    def close(self):
        self._pollable = self._socket = None
        self._release()


class Connection:
    """A connected TCP socket with its two streams; owns all of them and drops them in order."""

    def __init__(self, socket, input, output):
        self._socket = socket
        self._input = input
        self._output = output
        self._readable, self._writable, self._release = owner_of_streams(
            self, socket, input, output
        )
        try:
            self.peer = from_wasi(socket.remote_address())
            self.local = from_wasi(socket.local_address())
        except Err:
            self.peer = self.local = None  # already reset by the peer: reads will say so

    def streams(self, limit=LINE_LIMIT):
        """The connection's `(reader, writer)`. They hold the connection and it holds neither:
        with no reference cycle, a connection the program forgets is released (children
        first) as soon as both are dropped."""
        return StreamReader(self, limit), StreamWriter(self)

    @property
    def closed(self):
        return self._socket is None

    def shutdown_send(self):
        if self._socket is not None:
            try:
                self._socket.shutdown(tcp.ShutdownType.SEND)
            except Err:
                pass  # the peer is gone already: nothing left to tell it

    def close(self):
        """Drops the streams' pollables, the streams, then the socket."""
        self._readable = self._writable = self._input = self._output = self._socket = None
        self._release()


async def connect(address):
    """A `Connection` to `address` (an IP literal with a port). Needs a `tcp-connect` grant."""
    wasi_address, shown = wasi_and_shown(address)

    async def setup(socket, pollable):
        socket.start_connect(network(), wasi_address)
        return await finish(pollable, socket.finish_connect, f"connect to {shown}")

    socket, pollable, (input, output) = await open_socket(
        tcp_create_socket.create_tcp_socket,
        wasi_address,
        f"connect to {shown}",
        setup,
        f"connect to {shown}",
    )
    drop(pollable)
    return Connection(socket, input, output)


async def open_connection(host, port, *, limit=LINE_LIMIT):
    """Connects to `host:port` and returns `(reader, writer)`, as `asyncio.open_connection`:
    each address of `host` in turn until one answers. Needs a `tcp-connect` grant (and a `dns`
    grant if `host` is a name)."""
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
        return connection.streams(limit)
    raise error
