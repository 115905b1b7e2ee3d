//! plain-echo: how third-party components arrive — Rust `std::net` only, no sockbox SDK, no
//! `control`. Listens on the address given as its first argument and echoes, one client at a
//! time. The test suite runs it to prove any WASI 0.2 command works under sockbox.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr)?;
    println!("plain-echo listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let mut stream = stream?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n])?;
        }
        stream.shutdown(Shutdown::Write)?;
    }
    Ok(())
}
