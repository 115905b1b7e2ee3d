"""echo: every byte received is sent back; when the client half-closes, the rest is flushed
and the connection closed. Many clients at once, one instance: asyncio's streams echo server,
on the addresses granted with `--listen`."""

from sockbox_guest import Guest, start_server


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


class Run(Guest):
    async def main(self):
        server = await start_server(echo)
        async with server:
            await server.serve_forever()
