//! proxy: `sockbox run proxy --listen A --allow tcp-connect=U -- U` pipes each client to the
//! upstream `U` (an `ip:port`) both ways, with half-closes passed on in both directions.
//!
//! If the upstream cannot be reached (refused, or not granted: the guest gets access-denied),
//! that client's connection is closed, one line goes to stderr, and the others are served on.
//!
//! Also the WASI 0.3 `proxy-p3` (`guests/p3/proxy`), built from this file with the SDK's
//! `p3` feature.

use std::error::Error;
use std::io;
use std::net::SocketAddr;

use sockbox_guest::future::try_zip;
use sockbox_guest::net::TcpStream;
use sockbox_guest::serve::serve_tcp;

sockbox_guest::main!(async {
    let upstream = upstream(&sockbox_guest::args())?;
    serve_tcp(move |client, _peer| pipe(client, upstream)).await?;
    Ok::<_, Box<dyn Error>>(())
});

fn upstream(args: &[String]) -> Result<SocketAddr, String> {
    match args {
        [addr] => addr
            .parse()
            .map_err(|_| format!("the upstream must be ip:port, not `{addr}`")),
        _ => Err("usage: proxy UPSTREAM_IP:PORT".into()),
    }
}

async fn pipe(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    // An error here ends this client only; serve_tcp logs it as one line.
    let server = TcpStream::connect(upstream)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("upstream {upstream}: {e}")))?;
    let (from_client, to_client) = client.split();
    let (from_server, to_server) = server.split();
    // Each direction ends with the half-close it saw; the other keeps flowing.
    try_zip(
        from_client.pipe_to(&to_server),
        from_server.pipe_to(&to_client),
    )
    .await?;
    Ok(())
}
