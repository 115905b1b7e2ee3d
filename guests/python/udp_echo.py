"""udp_echo: every datagram goes back unchanged to its sender, empty ones too."""

from sockbox_guest import Guest, serve_udp


def echo(data, peer):
    return data


class Run(Guest):
    async def main(self):
        await serve_udp(echo)
