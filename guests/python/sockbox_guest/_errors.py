"""WASI failures as the `OSError`s Python programmers catch (`PermissionError` for a denial,
`ConnectionResetError`, `TimeoutError`...), with the WASI code kept in `.wasi_code`; and the
guest's own complaints on stderr, rate-limited so a flood of failing clients cannot flood the
host's log."""

import errno
import sys
import time

from componentize_py_types import Err
from wit_world.imports import streams
from wit_world.imports.network import ErrorCode

from ._resources import drop

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
        drop(failure.value)
    return ConnectionResetError(errno.ECONNRESET, f"{what}: {detail}")


_last_complaint = 0.0


def complain(text):
    """Prints `text` to stderr, at most one line a second for the whole guest."""
    global _last_complaint
    now = time.monotonic()
    if now - _last_complaint >= 1.0:
        _last_complaint = now
        print(text, file=sys.stderr, flush=True)
