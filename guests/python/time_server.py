"""time_server: the current UTC time, over TCP and UDP (whichever the host granted).

- TCP: on connect, the time as RFC 3339 and a newline, then the connection closes.
- UDP: the datagram is a strftime format (`%Y-%m-%d %X`); the reply is the time in it. An
  empty datagram gets RFC 3339; an invalid format gets `ERR invalid format`.
"""

import re
from datetime import datetime, timezone

from sockbox_guest import MAX_DATAGRAM, Guest, serve

# The conversions of C's strftime that the Rust time guest knows too, so both guests answer
# a format alike; anything else is refused rather than passed through.
FORMAT = re.compile(r"(?:[^%]|%[aAbBcCdDeFgGhHIjmMnpRStTuUVwWxXyYzZ%])*")


def rfc3339(now):
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def send_time(reader, writer):
    writer.write(f"{rfc3339(datetime.now(timezone.utc))}\n".encode())


def format_time(data, peer):
    now = datetime.now(timezone.utc)
    if not data:
        return rfc3339(now).encode()
    try:
        format = data.decode()
    except UnicodeDecodeError:
        return b"ERR format is not UTF-8"
    if not FORMAT.fullmatch(format):
        return b"ERR invalid format"
    reply = now.strftime(format).encode()
    return reply if len(reply) <= MAX_DATAGRAM else b"ERR reply too large for a datagram"


class Run(Guest):
    async def main(self):
        await serve(tcp=send_time, udp=format_time)
