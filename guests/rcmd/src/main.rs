//! rcmd: a remote "shell" with a fixed set of harmless commands; nothing is ever executed on
//! the host. Framed like `framing` (`u32` big-endian length + payload, 16 MiB at most).
//!
//! Request payload: a UTF-8 command line. Reply payload: one status byte (0 ok, 1 error),
//! then the output. The commands are in `commands.rs` (`help` lists them).

mod commands;

use std::process::ExitCode;

use sockbox_guest::framed::FramedStream;
use sockbox_guest::serve::serve_tcp;

fn main() -> ExitCode {
    sockbox_guest::run(serve_tcp(|stream, _peer| {
        FramedStream::new(stream).answer_each(|request| commands::reply(&request))
    }))
}
