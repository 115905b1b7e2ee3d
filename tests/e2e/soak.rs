//! Soak: many clients, many frames of mixed sizes (0 B to 1 MiB) through `framing`, every
//! byte checked. The default form is sized for CI on the debug-built host; the long form runs
//! with `SOCKBOX_SOAK=long cargo test --release --test e2e soak:: -- --nocapture`.

use std::time::Instant;

use tokio::net::TcpStream;

use crate::support::{policy, read_frame, start, stop_clean, tcp, write_frame};

struct Shape {
    clients: usize,
    frames: usize,
    /// One frame in this many is large (64 KiB to 1 MiB); the rest are small.
    large_every: usize,
}

const CI: Shape = Shape {
    clients: 500,
    frames: 100,
    large_every: 500,
};

/// About 15 times the frames and bytes of the CI form.
const LONG: Shape = Shape {
    clients: 2_000,
    frames: 200,
    large_every: 200,
};

/// A frame's size from the client and frame numbers (a fixed mix, the same every run): most
/// under 1 KiB (0 included), one in 50 up to 64 KiB, one in `large_every` up to 1 MiB.
fn size(shape: &Shape, client: usize, frame: usize) -> usize {
    let n = client * shape.frames + frame;
    // A cheap deterministic scramble (splitmix64's finaliser), so sizes do not line up.
    let mut x = n as u64 ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let x = (x ^ (x >> 31)) as usize;
    if n % shape.large_every == shape.large_every / 2 {
        64 * 1024 + x % (1024 * 1024 - 64 * 1024 + 1)
    } else if n % 50 == 7 {
        1024 + x % (63 * 1024)
    } else {
        x % 1024
    }
}

/// The payload of a frame: its bytes depend on client, frame and position, so a frame
/// delivered to the wrong client or out of order is caught.
fn payload(client: usize, frame: usize, len: usize) -> Vec<u8> {
    let seed = client * 7919 + frame * 104_729;
    (0..len).map(|i| ((seed + i * 31) % 251) as u8).collect()
}

#[tokio::test]
async fn many_clients_many_mixed_frames_every_byte_checked() {
    let shape = match std::env::var("SOCKBOX_SOAK").as_deref() {
        Ok("long") => LONG,
        _ => CI,
    };
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let addr = tcp(&sockets);
    let started = Instant::now();
    let shape = std::sync::Arc::new(shape);
    let clients: Vec<_> = (0..shape.clients)
        .map(|client| {
            let shape = shape.clone();
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let (mut rd, mut wr) = stream.into_split();
                // Frames are sent pipelined while the replies are read and checked.
                let sizes: Vec<usize> =
                    (0..shape.frames).map(|f| size(&shape, client, f)).collect();
                let to_send = sizes.clone();
                let writer = tokio::spawn(async move {
                    for (frame, &len) in to_send.iter().enumerate() {
                        write_frame(&mut wr, &payload(client, frame, len)).await;
                    }
                    wr
                });
                let mut bytes = 0;
                for (frame, &len) in sizes.iter().enumerate() {
                    let reply = read_frame(&mut rd).await;
                    assert_eq!(reply.len(), len, "client {client} frame {frame}: length");
                    assert!(
                        reply == payload(client, frame, len),
                        "client {client} frame {frame}: payload differs"
                    );
                    bytes += len;
                }
                drop(writer.await.expect("writer"));
                bytes
            })
        })
        .collect();
    let mut total = 0;
    for client in clients {
        total += client.await.expect("client task");
    }
    let secs = started.elapsed().as_secs_f64();
    let frames = shape.clients * shape.frames;
    eprintln!(
        "soak: {} clients x {} frames = {frames} frames, {:.1} MiB each way, {secs:.1} s ({:.0} frames/s)",
        shape.clients,
        shape.frames,
        total as f64 / (1024.0 * 1024.0),
        frames as f64 / secs
    );
    stop_clean(guest).await;
}

#[test]
fn the_mix_is_mostly_small_with_some_large_and_some_empty() {
    let sizes: Vec<usize> = (0..CI.clients)
        .flat_map(|c| (0..CI.frames).map(move |f| size(&CI, c, f)))
        .collect();
    let large = sizes.iter().filter(|&&s| s >= 64 * 1024).count();
    assert_eq!(large, sizes.len() / CI.large_every);
    assert!(sizes.iter().all(|&s| s <= 1024 * 1024));
    assert!(sizes.contains(&0), "empty frames are in the mix");
    let total: usize = sizes.iter().sum();
    assert!(total < 200 << 20, "bounded for CI: {total} bytes");
}
