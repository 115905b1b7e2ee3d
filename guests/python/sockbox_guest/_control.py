"""The sandbox's `control` interface in Python: what the host granted, the ready
announcement, and the host's request to stop."""

import asyncio

from wit_world.imports import control

from ._addresses import from_wasi
from ._loop import when_ready
from ._resources import drop


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
        drop(pollable)


async def until_shutdown(loops):
    """Returns once the host asks the guest to stop or one of `loops` (which otherwise never
    end) has ended."""
    shutdown = control.shutdown()
    stop = when_ready(shutdown)
    try:
        await asyncio.wait([stop, *loops], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        drop(shutdown)
