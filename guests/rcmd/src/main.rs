//! rcmd: a remote "shell" with a fixed set of harmless commands; nothing is ever executed on
//! the host. Framed like `framing` (`u32` big-endian length + payload, 16 MiB at most).
//!
//! Request payload: a UTF-8 command line. Reply payload: one status byte (0 ok, 1 error),
//! then the output. The commands are in `commands.rs` (`help` lists them).
//!
//! Guest arguments, as framing's: `--idle-timeout D` (default 5min) and `--read-timeout D`
//! (default 30s), D a duration such as `2s` or `off`. A timed-out connection is closed without
//! a reply.

mod commands;

use std::error::Error;
use std::process::ExitCode;

use lexopt::prelude::*;
use sockbox_guest::framed::FramedStream;
use sockbox_guest::serve::serve_tcp;
use sockbox_guest::timeouts::{Timeouts, parse_timeout};

fn main() -> ExitCode {
    sockbox_guest::run(async {
        let timeouts = timeouts(sockbox_guest::args())?;
        serve_tcp(move |stream, _peer| {
            FramedStream::new(stream)
                .with_timeouts(timeouts)
                .answer_each(|request| commands::reply(&request))
        })
        .await?;
        Ok::<_, Box<dyn Error>>(())
    })
}

fn timeouts(args: Vec<String>) -> Result<Timeouts, String> {
    let mut timeouts = Timeouts::default();
    let mut parser = lexopt::Parser::from_args(args);
    let fail = |e: lexopt::Error| format!("{e}\nusage: rcmd [--idle-timeout D] [--read-timeout D]");
    while let Some(arg) = parser.next().map_err(fail)? {
        let (flag, limit) = match arg {
            Long("idle-timeout") => ("--idle-timeout", &mut timeouts.idle),
            Long("read-timeout") => ("--read-timeout", &mut timeouts.read),
            other => return Err(fail(other.unexpected())),
        };
        let d = parser.value().map_err(fail)?.string().map_err(fail)?;
        *limit = parse_timeout(&d).map_err(|e| format!("{flag}: {e}"))?;
    }
    Ok(timeouts)
}
