//! echo: every byte received is sent back; on the client's half-close the rest is flushed
//! and the connection closed. Many clients at once, one instance.
//!
//! Also the WASI 0.3 `echo-p3` (`guests/p3/echo`), built from this file with the SDK's `p3`
//! feature.

use sockbox_guest::net::TcpStream;
use sockbox_guest::serve::serve_tcp;

sockbox_guest::main!(serve_tcp(|stream: TcpStream, _peer| async move {
    // Spliced host-side in WASI 0.2 (the bytes never pass through guest memory); a bounded
    // read/write loop in 0.3.
    stream.copy_to(&stream).await?;
    stream.shutdown_write().await
}));
