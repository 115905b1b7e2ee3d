"""echo: every byte received is sent back; when the client half-closes, the rest is flushed
and the connection closed. Many clients at once, one instance."""

from sockbox_guest import Guest, serve_tcp


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


class Run(Guest):
    async def main(self):
        await serve_tcp(echo)
