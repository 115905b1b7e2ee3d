"""A connection's two halves as `asyncio.StreamReader` and `asyncio.StreamWriter`: the same
method names and exceptions, over a WASI input and output stream instead of a transport.

The reader makes as few host calls as it can (a host call is most of a Python guest's cost
per request): after a short read it waits for readiness instead of reading again."""

import asyncio
import errno

from componentize_py_types import Err
from wit_world.imports import streams

from ._errors import stream_error
from ._loop import when_ready

READ_SIZE = 64 * 1024
LINE_LIMIT = 64 * 1024  # asyncio.StreamReader's default limit


class StreamReader:
    """The receiving half of a connection, as `asyncio.StreamReader`: `read`, `readline`,
    `readexactly`, `readuntil`, `at_eof`, `async for line in reader`."""

    def __init__(self, connection, limit=LINE_LIMIT):
        self._connection = connection
        self._buffer = bytearray()
        self._eof = False
        self._limit = limit
        self._waiter = None
        self._stopping = False
        self._drained = False

    def at_eof(self):
        """True once the peer has closed and every buffered byte has been read."""
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
        `asyncio.LimitOverrunError` past the reader's limit (the bytes stay buffered)."""
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
        """One line with its `\\n`; the last partial line at EOF; `b''` after it. A line
        longer than the limit raises `asyncio.LimitOverrunError`."""
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


class StreamWriter:
    """The sending half of a connection, as `asyncio.StreamWriter`: `write` never blocks,
    `await drain()` waits until the host has taken every byte; `close` then `await
    wait_closed()` sends what was written and closes the connection."""

    def __init__(self, connection):
        self._connection = connection
        self._buffer = bytearray()
        self._closing = False
        self._error = None

    def get_extra_info(self, name, default=None):
        """`"peername"` and `"sockname"`, as `(host, port)` tuples; `default` for the rest."""
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
        """Sends what was written, then closes the connection."""
        self._closing = True
        try:
            await self._flushed()
        finally:
            self._connection.close()
