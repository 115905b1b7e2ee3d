//! io-compose (a test guest): the SDK's `TcpStream` driven only by `futures-lite`'s generic I/O
//! helpers, none of the SDK's own stream methods. Per client: the first line (read with
//! `BufReader` + `AsyncBufReadExt::read_line`) comes back upper-cased (`AsyncWriteExt::write_all`);
//! everything after it comes back unchanged (`io::copy`, from what the `BufReader` holds on);
//! then `AsyncWriteExt::close` half-closes, and the client reads end of stream.

use std::process::ExitCode;

use sockbox_guest::io::{self, AsyncBufReadExt, AsyncWriteExt, BufReader};
use sockbox_guest::net::TcpStream;
use sockbox_guest::serve::serve_tcp;

fn main() -> ExitCode {
    sockbox_guest::run(serve_tcp(|stream: TcpStream, _peer| async move {
        let (reader, mut writer) = stream.split();
        let mut reader = BufReader::new(reader);
        let mut first = String::new();
        reader.read_line(&mut first).await?;
        writer.write_all(first.to_uppercase().as_bytes()).await?;
        io::copy(reader, &mut writer).await?;
        writer.close().await
    }))
}
