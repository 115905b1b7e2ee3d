//! echo: every byte received is sent back; on the client's half-close the rest is flushed
//! and the connection closed. Many clients at once, one instance.

use sockbox_guest::net::TcpStream;
use sockbox_guest::serve::serve_tcp;
use std::process::ExitCode;

fn main() -> ExitCode {
    sockbox_guest::run(serve_tcp(|stream: TcpStream, _peer| async move {
        // Spliced host-side: the bytes never pass through guest memory.
        stream.copy_to(&stream).await?;
        stream.shutdown_write().await
    }))
}
