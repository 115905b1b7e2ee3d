"""Socket addresses in the Python socket module's form, `(host, port)` (a 4-tuple for IPv6),
and back to WASI's `ip-socket-address`: the one place that knows WASI's byte and group
layout."""

import ipaddress

from wit_world.imports import network


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


def ip_from_wasi(address):
    """An `ipaddress` object for a WASI `ip-address` (what name lookup returns)."""
    if isinstance(address, network.IpAddress_Ipv4):
        return _ipv4(address.value)
    return _ipv6(address.value)


def from_wasi(address):
    """The Python socket module's form: `(host, port)`, or a 4-tuple for IPv6."""
    value = address.value
    if isinstance(address, network.IpSocketAddress_Ipv4):
        return (str(_ipv4(value.address)), value.port)
    return (str(_ipv6(value.address)), value.port, value.flow_info, value.scope_id)


def _ipv4(octets):
    return ipaddress.IPv4Address(bytes(octets))


def _ipv6(groups):
    return ipaddress.IPv6Address(b"".join(group.to_bytes(2, "big") for group in groups))


def family(wasi_address):
    """The address family a socket for `wasi_address` is created with."""
    if isinstance(wasi_address, network.IpSocketAddress_Ipv4):
        return network.IpAddressFamily.IPV4
    return network.IpAddressFamily.IPV6


def show(address):
    """`host:port`, with IPv6 hosts in brackets, for messages."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wasi_and_shown(address):
    """The WASI form and the shown form of a `(host, port)` tuple or a WASI address."""
    if isinstance(address, tuple):
        return to_wasi(address), show(address)
    return address, show(from_wasi(address))
