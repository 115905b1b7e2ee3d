"""WASI 0.2 sockets as Python objects: addresses as `(host, port)` tuples, errors as `OSError`,
and every resource dropped in the order WASI requires (pollables and streams before their
socket: dropping a socket with live children traps the whole guest)."""

import asyncio
import errno
import ipaddress
import weakref

from componentize_py_types import Err
from wit_world.imports import (
    instance_network,
    ip_name_lookup,
    network,
    streams,
    tcp,
    tcp_create_socket,
    udp,
    udp_create_socket,
)
from wit_world.imports.network import ErrorCode

from ._loop import when_ready

_network = None


def _net():
    # One handle for the guest's life; the host hands out the same capability every time.
    global _network
    if _network is None:
        _network = instance_network.instance_network()
    return _network


def _drop(*resources):
    """Releases resources in the order given, skipping the ones already gone."""
    for resource in resources:
        if resource is not None:
            resource.__exit__(None, None, None)


def _owner(owner, *resources):
    """Makes `owner` responsible for `resources`: they are dropped in the order given when it
    is closed (calling the returned function) or collected, whichever comes first.

    The finalizer, not the owner, holds the resources, so they stay reachable until it runs.
    A `__del__` would not do: when the garbage collector frees a reference cycle (a frame
    kept by a traceback, say), it releases the bindings' own handles first, in no order, and
    a socket dropped before its streams traps the whole guest."""
    return weakref.finalize(owner, _drop, *resources)


# --- addresses ---------------------------------------------------------------------------


def to_wasi(address):
    """`(host, port)` or `(host, port, flowinfo, scope_id)` with an IP literal as host."""
    host, port = address[0], address[1]
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port, tuple(ip.packed)))
    packed = ip.packed
    groups = tuple(int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2))
    flowinfo = address[2] if len(address) > 2 else 0
    scope_id = address[3] if len(address) > 3 else 0
    return network.IpSocketAddress_Ipv6(
        network.Ipv6SocketAddress(port, flowinfo, groups, scope_id)
    )


def from_wasi(address):
    """The Python socket module's form: `(host, port)`, or a 4-tuple for IPv6."""
    value = address.value
    if isinstance(address, network.IpSocketAddress_Ipv4):
        return (str(ipaddress.IPv4Address(bytes(value.address))), value.port)
    packed = b"".join(group.to_bytes(2, "big") for group in value.address)
    return (str(ipaddress.IPv6Address(packed)), value.port, value.flow_info, value.scope_id)


def _family(wasi_address):
    if isinstance(wasi_address, network.IpSocketAddress_Ipv4):
        return network.IpAddressFamily.IPV4
    return network.IpAddressFamily.IPV6


def _show(address):
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address(address):
    """The WASI form and the shown form of a `(host, port)` tuple or a WASI address."""
    if isinstance(address, tuple):
        return to_wasi(address), _show(address)
    return address, _show(from_wasi(address))


# --- errors ------------------------------------------------------------------------------

_ERRNO = {
    ErrorCode.ACCESS_DENIED: (PermissionError, errno.EACCES, "access denied by the sandbox"),
    ErrorCode.CONNECTION_REFUSED: (ConnectionRefusedError, errno.ECONNREFUSED, "connection refused"),
    ErrorCode.CONNECTION_RESET: (ConnectionResetError, errno.ECONNRESET, "connection reset"),
    ErrorCode.CONNECTION_ABORTED: (ConnectionAbortedError, errno.ECONNABORTED, "connection aborted"),
    ErrorCode.TIMEOUT: (TimeoutError, errno.ETIMEDOUT, "timed out"),
    ErrorCode.ADDRESS_IN_USE: (OSError, errno.EADDRINUSE, "address in use"),
    ErrorCode.ADDRESS_NOT_BINDABLE: (OSError, errno.EADDRNOTAVAIL, "address not bindable"),
    ErrorCode.NEW_SOCKET_LIMIT: (OSError, errno.EMFILE, "socket limit reached"),
    ErrorCode.REMOTE_UNREACHABLE: (OSError, errno.EHOSTUNREACH, "remote unreachable"),
    ErrorCode.NAME_UNRESOLVABLE: (OSError, errno.ENOENT, "name does not resolve"),
}


def socket_error(err, what):
    """An `OSError` subclass (PermissionError for a denial) for a `wasi:sockets` error code.
    `.wasi_code` keeps the code's WIT name, e.g. `access-denied`."""
    code = err.value if isinstance(err, Err) else err
    wit_name = code.name.lower().replace("_", "-")
    kind, number, text = _ERRNO.get(code, (OSError, errno.EIO, wit_name))
    exc = kind(number, f"{what}: {text} ({wit_name})")
    exc.wasi_code = wit_name
    return exc


def stream_error(err, what):
    """The error of a failed stream operation, as `ConnectionResetError` with the host's text."""
    failure = err.value
    detail = "closed"
    if isinstance(failure, streams.StreamError_LastOperationFailed):
        detail = failure.value.to_debug_string()
        _drop(failure.value)
    return ConnectionResetError(errno.ECONNRESET, f"{what}: {detail}")


async def _finish(socket, pollable, finish, what):
    """Completes a WASI `start-*`/`finish-*` pair, waiting while the host says would-block."""
    while True:
        try:
            return finish()
        except Err as e:
            if e.value != ErrorCode.WOULD_BLOCK:
                raise socket_error(e, what) from None
        await when_ready(pollable)


async def _open_socket(create, wasi_address, create_what, setup, setup_what):
    """A new socket from `create(family)`, set up by `await setup(socket, pollable)`.
    Returns `(socket, pollable, what setup returned)`; on any failure the pollable and the
    socket are dropped, in that order, and the error raised as `OSError`."""
    try:
        socket = create(_family(wasi_address))
    except Err as e:
        raise socket_error(e, create_what) from None
    pollable = socket.subscribe()
    try:
        return socket, pollable, await setup(socket, pollable)
    except Err as e:
        _drop(pollable, socket)
        raise socket_error(e, setup_what) from None
    except BaseException:
        _drop(pollable, socket)
        raise


# --- name lookup -------------------------------------------------------------------------


async def resolve(host):
    """IP addresses of `host` (an IP literal is its own answer). Needs a `dns` grant."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        lookup = ip_name_lookup.resolve_addresses(_net(), host)
    except Err as e:
        raise socket_error(e, f"resolve {host}") from None
    pollable = lookup.subscribe()
    found = []
    try:
        while True:
            try:
                address = lookup.resolve_next_address()
            except Err as e:
                if e.value == ErrorCode.WOULD_BLOCK:
                    await when_ready(pollable)
                    continue
                raise socket_error(e, f"resolve {host}") from None
            if address is None:
                return found
            if isinstance(address, network.IpAddress_Ipv4):
                found.append(ipaddress.IPv4Address(bytes(address.value)))
            else:
                packed = b"".join(g.to_bytes(2, "big") for g in address.value)
                found.append(ipaddress.IPv6Address(packed))
    finally:
        _drop(pollable, lookup)


# --- TCP ---------------------------------------------------------------------------------


class Listener:
    """A listening TCP socket on a granted address."""

    def __init__(self, socket, pollable):
        self._release = _owner(self, pollable, socket)
        self._socket = socket
        self._pollable = pollable
        self.address = from_wasi(socket.local_address())

    @classmethod
    async def bind(cls, address):
        wasi_address, shown = _address(address)

        async def setup(socket, pollable):
            socket.start_bind(_net(), wasi_address)
            await _finish(socket, pollable, socket.finish_bind, f"bind {shown}")
            socket.start_listen()
            await _finish(socket, pollable, socket.finish_listen, f"listen on {shown}")

        socket, pollable, _ = await _open_socket(
            tcp_create_socket.create_tcp_socket,
            wasi_address,
            f"create a TCP socket for {shown}",
            setup,
            f"listen on {shown}",
        )
        return cls(socket, pollable)

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
                raise socket_error(e, f"accept on {_show(self.address)}") from None
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
        self._readable = input.subscribe()
        self._writable = output.subscribe()
        self._release = _owner(
            self, self._readable, self._writable, input, output, socket
        )
        try:
            self.peer = from_wasi(socket.remote_address())
            self.local = from_wasi(socket.local_address())
        except Err:
            self.peer = self.local = None  # already reset by the peer: reads will say so

    def streams(self):
        """The connection's `(reader, writer)`. They hold the connection and it holds neither:
        with no reference cycle, a connection the program forgets is released (children
        first) as soon as both are dropped."""
        return Reader(self), Writer(self)

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
    wasi_address, shown = _address(address)

    async def setup(socket, pollable):
        socket.start_connect(_net(), wasi_address)
        return await _finish(socket, pollable, socket.finish_connect, f"connect to {shown}")

    socket, pollable, (input, output) = await _open_socket(
        tcp_create_socket.create_tcp_socket,
        wasi_address,
        f"connect to {shown}",
        setup,
        f"connect to {shown}",
    )
    _drop(pollable)
    return Connection(socket, input, output)


# --- streams -----------------------------------------------------------------------------

READ_SIZE = 64 * 1024
LINE_LIMIT = 64 * 1024  # asyncio.StreamReader's default limit


class Reader:
    """The receiving half of a connection, shaped like `asyncio.StreamReader`."""

    def __init__(self, connection, limit=LINE_LIMIT):
        self._connection = connection
        self._buffer = bytearray()
        self._eof = False
        self._limit = limit
        self._waiter = None
        self._stopping = False
        self._drained = False

    def at_eof(self):
        return self._eof and not self._buffer

    async def _fill(self):
        """Reads more into the buffer; False at the end of the stream."""
        while not self._eof:
            input = self._connection._input
            if input is None:
                self._eof = True
                break
            if not self._drained:
                try:
                    data = input.read(READ_SIZE)
                except Err as e:
                    self._eof = True
                    if isinstance(e.value, streams.StreamError_Closed):
                        break
                    raise stream_error(e, "read") from None
                if data:
                    self._buffer += data
                    # A short read emptied the socket: the next read would come back empty,
                    # so wait for readiness first (one host call fewer per request).
                    self._drained = len(data) < READ_SIZE
                    return True
            self._drained = False
            if self._stopping and not self._buffer:
                # The host is stopping the guest and this connection is between requests:
                # end it as if the client had left.
                self._eof = True
                break
            self._waiter = when_ready(self._connection._readable)
            try:
                await self._waiter
            finally:
                self._waiter = None
        return False

    def _stop(self):
        """Shutdown: a read that waits for a new request ends with EOF; one in the middle of
        a request (bytes already buffered) goes on until the drain period ends."""
        self._stopping = True
        if self._waiter is not None and not self._buffer and not self._waiter.done():
            self._waiter.set_result(None)

    def _take(self, n):
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    async def read(self, n=-1):
        """Up to `n` bytes (`b''` at EOF); all bytes up to EOF if `n` is negative."""
        if n == 0:
            return b""
        if n < 0:
            while await self._fill():
                pass
            return self._take(len(self._buffer))
        if not self._buffer:
            await self._fill()
        return self._take(n)

    async def readexactly(self, n):
        """Exactly `n` bytes; `asyncio.IncompleteReadError` if the stream ends first."""
        while len(self._buffer) < n:
            if not await self._fill():
                partial = self._take(len(self._buffer))
                raise asyncio.IncompleteReadError(partial, n)
        return self._take(n)

    async def readuntil(self, separator=b"\n"):
        """Bytes up to and including `separator`. `asyncio.IncompleteReadError` at EOF,
        `asyncio.LimitOverrunError` past the reader's limit."""
        start = 0
        while True:
            found = self._buffer.find(separator, start)
            if found >= 0:
                end = found + len(separator)
                if end > self._limit:
                    raise asyncio.LimitOverrunError("separator found past the limit", found)
                return self._take(end)
            if len(self._buffer) > self._limit:
                raise asyncio.LimitOverrunError("no separator within the limit", len(self._buffer))
            start = max(0, len(self._buffer) - len(separator) + 1)
            if not await self._fill():
                partial = self._take(len(self._buffer))
                raise asyncio.IncompleteReadError(partial, None)

    async def readline(self):
        """One line with its `\\n`; the last partial line at EOF; `b''` after it."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial

    def __aiter__(self):
        return self

    async def __anext__(self):
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class Writer:
    """The sending half of a connection, shaped like `asyncio.StreamWriter`: `write` never
    blocks, `drain` waits until the host has taken every byte."""

    def __init__(self, connection):
        self._connection = connection
        self._buffer = bytearray()
        self._closing = False
        self._error = None

    def get_extra_info(self, name, default=None):
        return {"peername": self._connection.peer, "sockname": self._connection.local}.get(
            name, default
        )

    def is_closing(self):
        return self._closing

    def write(self, data):
        if self._error is not None:
            raise self._error
        if self._closing:
            raise ConnectionError("write after close")
        self._buffer += data
        self._push()

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def _push(self):
        """Hands the host as much of the buffer as it takes now, without waiting."""
        output = self._connection._output
        if output is None:
            self._error = self._error or BrokenPipeError(errno.EPIPE, "connection closed")
            self._buffer.clear()
            return
        try:
            while self._buffer:
                room = output.check_write()
                if room == 0:
                    return
                chunk = bytes(self._buffer[:room])
                output.write(chunk)
                del self._buffer[: len(chunk)]
            output.flush()
        except Err as e:
            self._error = stream_error(e, "write")
            self._buffer.clear()

    async def drain(self):
        """Waits until the host has taken everything written so far."""
        while self._buffer and self._error is None:
            await when_ready(self._connection._writable)
            self._push()
        if self._error is not None:
            raise self._error

    async def _flushed(self):
        """Waits until the host has sent what it took (before the socket may be dropped)."""
        await self.drain()
        output = self._connection._output
        if output is None:
            return
        try:
            output.flush()
            while output.check_write() == 0:
                await when_ready(self._connection._writable)
        except Err:
            pass  # the peer is gone: nothing left to flush

    def can_write_eof(self):
        return True

    def write_eof(self):
        """Half-close: pending bytes go out first (call `drain` before for that)."""
        self._connection.shutdown_send()

    def close(self):
        """Stops writing; the connection closes once what was written has been sent."""
        self._closing = True

    async def wait_closed(self):
        self._closing = True
        try:
            await self._flushed()
        finally:
            self._connection.close()


# --- UDP ---------------------------------------------------------------------------------

MAX_DATAGRAM = 65_507  # the largest UDP payload over IPv4


class DatagramEndpoint:
    """A bound UDP socket with its datagram streams, not connected to one peer."""

    def __init__(self, socket, incoming, outgoing):
        self._socket = socket
        self._incoming = incoming
        self._outgoing = outgoing
        self._receivable = incoming.subscribe()
        self._sendable = outgoing.subscribe()
        self._release = _owner(
            self, self._receivable, self._sendable, incoming, outgoing, socket
        )
        self.address = from_wasi(socket.local_address())

    @classmethod
    async def bind(cls, address):
        wasi_address, shown = _address(address)

        async def setup(socket, pollable):
            socket.start_bind(_net(), wasi_address)
            await _finish(socket, pollable, socket.finish_bind, f"bind UDP {shown}")
            return socket.stream(None)

        socket, pollable, (incoming, outgoing) = await _open_socket(
            udp_create_socket.create_udp_socket,
            wasi_address,
            f"create a UDP socket for {shown}",
            setup,
            f"bind UDP {shown}",
        )
        _drop(pollable)
        return cls(socket, incoming, outgoing)

    async def receive(self, max_datagrams=64):
        """The next datagrams (at least one) as `(data, (host, port))` pairs."""
        while True:
            try:
                datagrams = self._incoming.receive(max_datagrams)
            except Err as e:
                raise socket_error(e, f"receive on {_show(self.address)}") from None
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
                error = socket_error(e, f"send to {_show(address)}")
                error.sent = done
                raise error from None
            del pending[:sent]
            done += sent
            if pending:
                await when_ready(self._sendable)

    def close(self):
        self._receivable = self._sendable = self._incoming = self._outgoing = self._socket = None
        self._release()
