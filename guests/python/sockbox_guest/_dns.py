"""Name lookup through `wasi:sockets/ip-name-lookup`, which the host answers only under a
`dns` grant; an IP literal never asks the host."""

import ipaddress

from componentize_py_types import Err
from wit_world.imports import ip_name_lookup
from wit_world.imports.network import ErrorCode

from ._addresses import ip_from_wasi
from ._errors import socket_error
from ._loop import when_ready
from ._resources import drop, network


async def resolve(host):
    """IP addresses of `host` (an IP literal is its own answer). Needs a `dns` grant."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        lookup = ip_name_lookup.resolve_addresses(network(), host)
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
            found.append(ip_from_wasi(address))
    finally:
        drop(pollable, lookup)
