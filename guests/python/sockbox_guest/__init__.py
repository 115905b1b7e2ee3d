"""Write a sockbox guest in Python: asyncio's streams and servers over the sandbox's WASI 0.2
sockets.

    from sockbox_guest import Guest, start_server

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    class Run(Guest):                  # the component's `wasi:cli/run` export
        async def main(self):
            server = await start_server(echo)
            async with server:
                await server.serve_forever()

`start_server(cb)` with no host and port listens on every address the host granted with
`--listen`; `serve_forever` says ready, runs `cb(reader, writer)` for each client as its own
task, and returns once the host asks the guest to stop. The readers and writers are
`StreamReader`s and `StreamWriter`s with asyncio's methods; `open_connection` is asyncio's too.
`serve_tcp(cb)` does all of that in one call; `serve_udp` does the same for `--udp`
datagrams, `serve` both in one guest. Errors are `OSError`s: a denied operation raises
`PermissionError`, with the WASI code in `.wasi_code`.

The package, one concern a module: `_resources` (drop order), `_addresses`, `_errors`, `_dns`,
`_sockets` (what TCP and UDP share), `_tcp`, `_streams`, `_udp`, `_server`, `_control` (the
host's grants, ready, shutdown) and `_loop` (the event loop).
"""

import asyncio
import sys
import traceback

from componentize_py_types import Err
from wit_world import exports

from ._addresses import from_wasi
from ._control import listen_addresses, ready, shutdown_requested, udp_addresses
from ._dns import resolve
from ._loop import PollLoop
from ._server import DRAIN_PERIOD, Server, serve, serve_tcp, serve_udp, start_server
from ._streams import StreamReader, StreamWriter
from ._tcp import Connection, Listener, connect, open_connection
from ._udp import MAX_DATAGRAM, DatagramEndpoint

# The names before asyncio's: guests written against them keep working (as do imports of
# `Connection`, `connect`, `resolve` and `from_wasi`, which were never in `__all__`).
Reader = StreamReader
Writer = StreamWriter

__all__ = [
    "DRAIN_PERIOD",
    "MAX_DATAGRAM",
    "DatagramEndpoint",
    "Guest",
    "Listener",
    "Reader",
    "Server",
    "StreamReader",
    "StreamWriter",
    "Writer",
    "listen_addresses",
    "open_connection",
    "ready",
    "run",
    "serve",
    "serve_tcp",
    "serve_udp",
    "shutdown_requested",
    "start_server",
    "udp_addresses",
]


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
