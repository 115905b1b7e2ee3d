"""An asyncio event loop whose one blocking call is `wasi:io/poll#poll`.

componentize-py ships `poll_loop.py` for `wasi:http`: it has no timers (`asyncio.sleep` and
`wait_for` raise `NotImplementedError`), no sockets, and one task's unhandled exception stops
the whole loop. Here `asyncio.BaseEventLoop` keeps its own timers, handles and error reporting;
only the "selector" is replaced: it waits on the pollables that tasks registered, plus a clock
pollable for the next timer.
"""

import asyncio

from wit_world.imports import monotonic_clock, poll


class _PollSelector:
    """What `BaseEventLoop._run_once` calls to wait: `select(timeout)` returns the ready waiters."""

    def __init__(self):
        # (pollable, future) pairs; the pollable belongs to whoever registered it.
        self.waiting = []

    def select(self, timeout):
        # A cancelled waiter's owner may already have dropped its pollable: never poll it.
        waiting = [w for w in self.waiting if not w[1].done()]
        if not waiting and timeout == 0:
            self.waiting = waiting
            return []
        if not waiting and timeout is None:
            raise RuntimeError(
                "the guest waits for nothing: no socket, timer or shutdown signal is pending"
            )
        pollables = [pollable for pollable, _ in waiting]
        timer = None
        if timeout is not None:
            timer = monotonic_clock.subscribe_duration(max(0, int(timeout * 1e9)))
            pollables.append(timer)
        try:
            ready = poll.poll(pollables)
        finally:
            if timer is not None:
                timer.__exit__(None, None, None)
        woken = set(ready)
        self.waiting = [w for i, w in enumerate(waiting) if i not in woken]
        return [waiting[i][1] for i in ready if i < len(waiting)]

    def close(self):
        self.waiting = []


class PollLoop(asyncio.BaseEventLoop):
    """The event loop of a sockbox guest: single-threaded, driven by `wasi:io/poll`."""

    def __init__(self):
        super().__init__()
        self._selector = _PollSelector()

    def _process_events(self, event_list):
        for future in event_list:
            if not future.done():
                future.set_result(None)

    def _write_to_self(self):
        # Nothing else runs in a guest: no other thread can need to wake the loop.
        pass

    def when_ready(self, pollable):
        """A future that completes once `pollable` is ready. The caller keeps owning the
        pollable and drops it only after the future is done (or cancelled)."""
        future = self.create_future()
        self._selector.waiting.append((pollable, future))
        return future


def when_ready(pollable):
    """`PollLoop.when_ready` on the running loop."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, PollLoop):
        raise RuntimeError("sockbox_guest needs its own event loop: start it with sockbox_guest.run")
    return loop.when_ready(pollable)
