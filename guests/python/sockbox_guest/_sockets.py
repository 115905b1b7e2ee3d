"""What TCP and UDP sockets share: creating one for an address's family, and WASI's
`start-*`/`finish-*` pairs, with the socket and its pollable dropped in order when setting it
up fails."""

from componentize_py_types import Err
from wit_world.imports.network import ErrorCode

from ._addresses import family
from ._errors import socket_error
from ._loop import when_ready
from ._resources import drop, network


async def finish(pollable, finish_step, what):
    """Completes a WASI `start-*`/`finish-*` pair, waiting while the host says would-block."""
    while True:
        try:
            return finish_step()
        except Err as e:
            if e.value != ErrorCode.WOULD_BLOCK:
                raise socket_error(e, what) from None
        await when_ready(pollable)


async def bind(socket, pollable, wasi_address, what):
    """Binds a new TCP or UDP socket to `wasi_address`."""
    socket.start_bind(network(), wasi_address)
    await finish(pollable, socket.finish_bind, what)


async def open_socket(create, wasi_address, create_what, setup, setup_what):
    """A new socket from `create(family)`, set up by `await setup(socket, pollable)`.
    Returns `(socket, pollable, what setup returned)`; on any failure the pollable and the
    socket are dropped, in that order, and the error raised as `OSError`."""
    try:
        socket = create(family(wasi_address))
    except Err as e:
        raise socket_error(e, create_what) from None
    pollable = socket.subscribe()
    try:
        return socket, pollable, await setup(socket, pollable)
    except Err as e:
        drop(pollable, socket)
        raise socket_error(e, setup_what) from None
    except BaseException:
        drop(pollable, socket)
        raise
