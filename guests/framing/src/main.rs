//! framing: every frame (`u32` big-endian length + payload) is answered with one frame
//! holding the same payload, however frames arrive split or glued together. Frames are
//! relayed whole, without being taken apart.
//!
//! Payloads are limited to 16 MiB, or to `--max-frame N` bytes (`sockbox run framing --listen
//! ADDR -- --max-frame 1024`). A larger header gets the frame `ERR frame too large` and its
//! connection is closed; the other clients are served on.

use std::error::Error;
use std::process::ExitCode;

use sockbox_guest::framed::FramedStream;
use sockbox_guest::serve::serve_tcp;
use sockbox_guest::wire::DEFAULT_MAX_FRAME;

fn main() -> ExitCode {
    sockbox_guest::run(async {
        let max = max_frame(&sockbox_guest::args())?;
        serve_tcp(move |stream, _peer| FramedStream::with_max_frame(stream, max).echo_each())
            .await?;
        Ok::<_, Box<dyn Error>>(())
    })
}

fn max_frame(args: &[String]) -> Result<usize, String> {
    match args {
        [] => Ok(DEFAULT_MAX_FRAME),
        [flag, n] if flag == "--max-frame" => n
            .parse()
            .map_err(|_| format!("--max-frame wants a number of bytes, not `{n}`")),
        _ => Err(format!("usage: framing [--max-frame BYTES], got {args:?}")),
    }
}
