"""streams (a test guest): `start_server` and asyncio's stream methods, one behaviour per
command line. `exactly N` reads N bytes, `until SEP` up to SEP (the reader's limit is 1024);
the answer is the bytes read, or `incomplete GOT WANTED eof=AT_EOF` when the client closed
first, or `overrun` past the limit (both end the connection). `peer`, `sockname` and `sockets`
tell addresses; `listen HOST PORT` (`-` for None) what another start_server binds; `names`
checks the old names; `lines` uses writelines; `eof` half-closes."""

import asyncio

from sockbox_guest import Guest, Reader, StreamReader, StreamWriter, Writer, start_server

server = None


def show(address):
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def listen(host, port):
    """`start_server` with a host and port (`-` for None): where it listens, or its error."""
    host = None if host == "-" else host
    port = None if port == "-" else int(port)
    try:
        other = await start_server(answer, host, port, start_serving=False)
    except OSError as e:
        return f"error {type(e).__name__} {getattr(e, 'wasi_code', '-')}\n".encode()
    shown = " ".join(show(s.getsockname()) for s in other.sockets)
    other.close()
    return f"listening {shown}\n".encode()


async def answer(reader, writer):
    async for line in reader:
        command, _, argument = line.decode().rstrip("\n").partition(" ")
        try:
            if command == "exactly":
                writer.write(b"exactly " + await reader.readexactly(int(argument)) + b"\n")
            elif command == "until":
                writer.write(b"until " + await reader.readuntil(argument.encode()) + b"\n")
            elif command in ("peer", "sockname"):
                name = "peername" if command == "peer" else command
                writer.write(f"{command} {show(writer.get_extra_info(name))}\n".encode())
            elif command == "sockets":
                shown = " ".join(show(s.getsockname()) for s in server.sockets)
                writer.write(f"sockets {shown}\n".encode())
            elif command == "names":
                same = Reader is StreamReader and Writer is StreamWriter
                old = isinstance(reader, Reader) and isinstance(writer, Writer)
                writer.write(f"aliases {same and old}\n".encode())
            elif command == "listen":
                writer.write(await listen(*argument.split()))
            elif command == "lines":
                writer.writelines([b"one\n", b"two\n"])
            elif command == "eof":
                writer.write(f"bye {writer.can_write_eof()}\n".encode())
                await writer.drain()
                writer.write_eof()
                await reader.read()
                return
            else:
                writer.write(b"unknown\n")
        except asyncio.IncompleteReadError as e:
            eof = reader.at_eof()
            writer.write(f"incomplete {len(e.partial)} {e.expected} eof={eof}\n".encode())
            break
        except asyncio.LimitOverrunError:
            writer.write(b"overrun\n")
            break
        await writer.drain()
    writer.close()
    await writer.wait_closed()


class Run(Guest):
    async def main(self):
        global server
        server = await start_server(answer, limit=1024)
        async with server:
            await server.serve_forever()
