"""Who drops which WASI resource, and when.

WASI requires a resource's children (its pollables, a socket's streams) to be dropped before
it: dropping a socket with a live stream traps the whole guest ("resource has children"). Every
socket object of this package hands its resources to `owner`, which drops them in the order
given when the object is closed or collected, whichever comes first."""

import weakref

from wit_world.imports import instance_network

_network = None


def network():
    """The guest's `network` handle. One for its life: the host hands out the same capability
    every time."""
    global _network
    if _network is None:
        _network = instance_network.instance_network()
    return _network


def drop(*resources):
    """Releases resources in the order given, skipping the ones already gone."""
    for resource in resources:
        if resource is not None:
            resource.__exit__(None, None, None)


def owner(holder, *resources):
    """Makes `holder` responsible for `resources`: they are dropped in the order given when it
    is closed (calling the returned function) or collected, whichever comes first.

    The finalizer, not the holder, keeps the resources, so they stay reachable until it runs.
    A `__del__` would not do: when the garbage collector frees a reference cycle (a frame
    kept by a traceback, say), it releases the bindings' own handles first, in no order, and
    a socket dropped before its streams traps the whole guest."""
    return weakref.finalize(holder, drop, *resources)


def owner_of_streams(holder, socket, first, second):
    """Makes `holder` responsible for a socket and its two streams (TCP's input and output,
    UDP's incoming and outgoing): it drops a pollable of each stream, the streams, then the
    socket. Returns the two pollables and the function that closes."""
    pollables = first.subscribe(), second.subscribe()
    return (*pollables, owner(holder, *pollables, first, second, socket))
