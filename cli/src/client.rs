//! `sockbox client`: the native counterpart of the tutorials' `input()` clients — read stdin,
//! send it to a server, print what comes back.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

use super::Failure;
use sockbox_wire::{FrameDecoder, encode_frame};

#[derive(Args, Debug)]
pub(crate) struct ClientArgs {
    /// tcp: bytes both ways; udp: one datagram per line; framed: one u32-length frame per
    /// line (framing, rcmd); chat: lines both ways.
    #[arg(value_enum)]
    mode: Mode,
    /// The server, `ip:port`.
    addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Tcp,
    Udp,
    Framed,
    Chat,
}

/// How long the UDP client waits for replies after stdin ends.
const UDP_LINGER: Duration = Duration::from_secs(1);

pub(crate) async fn client(args: ClientArgs) -> Result<u8, Failure> {
    let result = match args.mode {
        Mode::Tcp | Mode::Chat => stream(args.addr).await,
        Mode::Udp => datagrams(args.addr).await,
        Mode::Framed => framed(args.addr).await,
    };
    result
        .map(|()| 0)
        .map_err(|error| Failure { status: 1, error })
}

/// stdin to the server, the server to stdout; stdin's end half-closes, the server's ends us.
async fn stream(addr: SocketAddr) -> Result<()> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let (mut from_server, mut to_server) = stream.into_split();
    let upload = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut to_server).await?;
        to_server.shutdown().await
    });
    let mut stdout = tokio::io::stdout();
    tokio::io::copy(&mut from_server, &mut stdout)
        .await
        .context("read from the server")?;
    stdout.flush().await?;
    upload.abort();
    Ok(())
}

/// Each stdin line is one datagram; each reply is printed on its own line.
async fn datagrams(addr: SocketAddr) -> Result<()> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let socket = UdpSocket::bind(local).await?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut buf = vec![0u8; 65_536];
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line? {
                Some(line) => { socket.send(line.as_bytes()).await?; }
                None => stdin_open = false,
            },
            n = socket.recv(&mut buf) => {
                println!("{}", String::from_utf8_lossy(&buf[..n?]));
            }
            _ = tokio::time::sleep(UDP_LINGER), if !stdin_open => return Ok(()),
        }
    }
}

/// Each stdin line is one frame; each reply frame's payload is printed.
async fn framed(addr: SocketAddr) -> Result<()> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let (mut from_server, mut to_server) = stream.into_split();
    let upload = tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            to_server.write_all(&encode_frame(line.as_bytes())).await?;
        }
        to_server.shutdown().await
    });
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = tokio::io::stdout();
    loop {
        while let Some(payload) = decoder.next_frame()? {
            stdout.write_all(&payload).await?;
            if !payload.ends_with(b"\n") {
                stdout.write_all(b"\n").await?;
            }
            stdout.flush().await?;
        }
        let n = from_server
            .read(&mut buf)
            .await
            .context("read from the server")?;
        if n == 0 {
            break;
        }
        decoder.extend(&buf[..n]);
    }
    upload.abort();
    Ok(())
}
