"""dial (a test guest): each line `HOST PORT` from a client is a connection attempt to
HOST:PORT; the reply is `ok\\n` with the peer's first line, or `error CODE TYPE\\n` with what the
guest saw (e.g. `error access-denied PermissionError`). `forget HOST PORT` connects and drops
the connection without closing it (`forgot\\n`): the support package must release it in order."""

import gc

from sockbox_guest import Guest, open_connection, serve_tcp


async def dial(reader, writer):
    async for line in reader:
        words = line.decode().split()
        if words[0] == "forget":
            upstream = await open_connection(words[1], int(words[2]))
            del upstream
            gc.collect()
            writer.write(b"forgot\n")
            await writer.drain()
            continue
        host, port = words
        try:
            upstream_reader, upstream_writer = await open_connection(host, int(port))
        except OSError as e:
            writer.write(f"error {getattr(e, 'wasi_code', '-')} {type(e).__name__}\n".encode())
        else:
            greeting = await upstream_reader.readline()
            upstream_writer.close()
            await upstream_writer.wait_closed()
            writer.write(b"ok " + greeting)
        await writer.drain()


class Run(Guest):
    async def main(self):
        await serve_tcp(dial)
