//! framing: every frame (`u32` big-endian length + payload) is answered with one frame
//! holding the same payload, however frames arrive split or glued together. Frames are
//! relayed whole, without being taken apart.
//!
//! Guest arguments (`sockbox run framing --listen ADDR -- ARGS`):
//! - `--max-frame N`: payloads of at most N bytes (default 16 MiB). A larger header gets the
//!   frame `ERR frame too large` and its connection is closed; the other clients are served on.
//! - `--idle-timeout D`: close a connection that sent nothing for D (default 5min).
//! - `--read-timeout D`: close a connection whose frame, once begun, is not complete within D
//!   (default 30s; one byte a second is not a way to hold a connection).
//!
//! D is a duration such as `2s`, `500ms` or `5min`, or `off`. A timed-out connection is closed
//! without a reply.
//!
//! Also the WASI 0.3 `framing-p3` (`guests/p3/framing`), built from this file with the SDK's
//! `p3` feature.

use std::error::Error;

use sockbox_guest::framed::FramedStream;
use sockbox_guest::options;
use sockbox_guest::serve::serve_tcp;
use sockbox_guest::timeouts::Timeouts;
use sockbox_guest::wire::DEFAULT_MAX_FRAME;

sockbox_guest::main!(async {
    let options = options(sockbox_guest::args())?;
    serve_tcp(move |stream, _peer| {
        FramedStream::with_max_frame(stream, options.max_frame)
            .with_timeouts(options.timeouts)
            .echo_each()
    })
    .await?;
    Ok::<_, Box<dyn Error>>(())
});

const USAGE: &str = "usage: framing [--max-frame BYTES] [--idle-timeout D] [--read-timeout D]";

#[derive(Clone, Copy)]
struct Options {
    max_frame: usize,
    timeouts: Timeouts,
}

fn options(args: Vec<String>) -> Result<Options, String> {
    let mut max_frame = DEFAULT_MAX_FRAME;
    let timeouts = options::parse(args, USAGE, &mut [("max-frame", &mut max_frame)])?;
    Ok(Options {
        max_frame,
        timeouts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockbox_guest::Duration;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_set_the_limits_and_bad_ones_say_what_is_wrong() {
        let o = options(args(&[
            "--max-frame",
            "1024",
            "--idle-timeout",
            "2s",
            "--read-timeout",
            "off",
        ]))
        .unwrap();
        assert_eq!(o.max_frame, 1024);
        assert_eq!(o.timeouts.idle, Some(Duration::from_secs(2)));
        assert_eq!(o.timeouts.read, None);
        let defaults = options(Vec::new()).unwrap();
        assert_eq!(
            (defaults.max_frame, defaults.timeouts),
            (DEFAULT_MAX_FRAME, Timeouts::default())
        );
        let err = options(args(&["--read-timeout", "soon"])).err().unwrap();
        assert!(
            err.contains("--read-timeout") && err.contains("soon"),
            "{err}"
        );
        let err = options(args(&["--fast"])).err().unwrap();
        assert!(err.contains("--fast") && err.contains("usage"), "{err}");
        assert!(
            options(args(&["--idle-timeout"])).is_err(),
            "a flag without its value"
        );
    }
}
