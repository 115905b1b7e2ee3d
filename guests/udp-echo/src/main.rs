//! udp-echo: every datagram is sent back unchanged to its sender, empty ones too.
//! Serves every `--udp` address at once, one task per socket, until the host asks to stop.

use std::process::ExitCode;

use sockbox_guest::serve::serve_udp;

fn main() -> ExitCode {
    sockbox_guest::run(serve_udp(|datagram| datagram))
}
