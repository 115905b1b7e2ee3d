//! udp-echo: every datagram is sent back unchanged to its sender, empty ones too.
//! Serves every `--udp` address at once, one task per socket, until the host asks to stop.
//!
//! Also the WASI 0.3 `udp-echo-p3` (`guests/p3/udp-echo`), built from this file with the SDK's
//! `p3` feature.

use sockbox_guest::serve::serve_udp;

sockbox_guest::main!(serve_udp(|datagram| datagram));
