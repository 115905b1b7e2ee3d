//! rcmd: a remote "shell" with a fixed set of harmless commands; nothing is ever executed on
//! the host. Framed like `framing` (`u32` big-endian length + payload, 16 MiB at most).
//!
//! Request payload: a UTF-8 command line. Reply payload: one status byte (0 ok, 1 error),
//! then the output. The commands are in `commands.rs` (`help` lists them).
//!
//! Guest arguments, as framing's: `--idle-timeout D` (default 5min) and `--read-timeout D`
//! (default 30s), D a duration such as `2s` or `off`. A timed-out connection is closed without
//! a reply.
//!
//! Also the WASI 0.3 `rcmd-p3` (`guests/p3/rcmd`), built from this file with the SDK's
//! `p3` feature.

mod commands;

use std::error::Error;

use sockbox_guest::framed::FramedStream;
use sockbox_guest::options;
use sockbox_guest::serve::serve_tcp;
use sockbox_guest::timeouts::Timeouts;

sockbox_guest::main!(async {
    let timeouts = timeouts(sockbox_guest::args())?;
    serve_tcp(move |stream, _peer| {
        FramedStream::new(stream)
            .with_timeouts(timeouts)
            .answer_each(|request| commands::reply(&request))
    })
    .await?;
    Ok::<_, Box<dyn Error>>(())
});

fn timeouts(args: Vec<String>) -> Result<Timeouts, String> {
    options::parse(
        args,
        "usage: rcmd [--idle-timeout D] [--read-timeout D]",
        &mut [],
    )
}
