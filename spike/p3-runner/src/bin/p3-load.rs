//! Load clients for the WASI 0.3 figures in docs/design/wasi-p3.md, and the native echo they
//! are compared against. Loopback only.
//!
//! - `p3-load native` — a thread-per-connection echo on 127.0.0.1:0; prints `listening <addr>`.
//! - `p3-load open <addr> <n> [hold-secs]` — opens n clients one after another, each echoing
//!   one byte, and holds them all (for `hold-secs` more, to measure the server idle); prints
//!   the seconds it took.
//! - `p3-load rr <addr> <clients> <secs>` — every client does 32-byte round trips for `secs`;
//!   prints round trips/s, p50/p99 latency, per-connection counts in connection order and the
//!   fairness ratio (mean of the slowest tenth of connections over the median).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).with_context(|| format!("missing argument {i}"));
    match args.first().map(String::as_str) {
        Some("native") => native(),
        Some("open") => {
            let hold = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.0);
            open(arg(1)?.parse()?, arg(2)?.parse()?, hold)
        }
        Some("rr") => rr(arg(1)?.parse()?, arg(2)?.parse()?, arg(3)?.parse()?),
        _ => bail!("usage: p3-load native | open <addr> <n> [hold] | rr <addr> <clients> <secs>"),
    }
}

fn native() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?);
    for conn in listener.incoming() {
        let mut conn = conn?;
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            })?;
    }
    Ok(())
}

fn open(addr: SocketAddr, n: usize, hold_secs: f64) -> Result<()> {
    let start = Instant::now();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut conn = TcpStream::connect(addr).with_context(|| format!("client {i}"))?;
        conn.set_nodelay(true)?;
        conn.write_all(b"x")?;
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte)
            .with_context(|| format!("echo of client {i}"))?;
        held.push(conn);
    }
    println!("open {n}: {:.3} s", start.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs_f64(hold_secs));
    drop(held);
    Ok(())
}

fn rr(addr: SocketAddr, clients: usize, secs: f64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Connect all first, in order, so "connection order" is the guest's accept order.
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            let conn = tokio::net::TcpStream::connect(addr).await?;
            conn.set_nodelay(true)?;
            conns.push(conn);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    let msg = [7u8; 32];
                    let mut back = [0u8; 32];
                    let mut latencies = Vec::new();
                    while tokio::time::Instant::now() < deadline {
                        let t = Instant::now();
                        conn.write_all(&msg).await?;
                        let step = tokio::time::timeout_at(deadline, conn.read_exact(&mut back));
                        match step.await {
                            Ok(read) => read?,
                            Err(_) => break, // the deadline fell mid round trip
                        };
                        latencies.push(t.elapsed());
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut per_conn = Vec::with_capacity(clients);
        let mut all = Vec::new();
        for task in tasks {
            let latencies = task.await??;
            per_conn.push(latencies.len());
            all.extend(latencies);
        }
        report(clients, secs, &per_conn, &mut all);
        anyhow::Ok(())
    })
}

fn report(clients: usize, secs: f64, per_conn: &[usize], all: &mut [Duration]) {
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)));
    let us = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
    let mut sorted = per_conn.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2] as f64;
    let tenth = sorted.len().div_ceil(10);
    let slow = sorted[..tenth].iter().sum::<usize>() as f64 / tenth as f64;
    let first: Vec<usize> = per_conn.iter().take(8).copied().collect();
    let busiest = (0..per_conn.len())
        .max_by_key(|&i| per_conn[i])
        .unwrap_or(0);
    println!(
        "rr {clients}: {:.0} rt/s p50 {:.0} us p99 {:.0} us; slowest tenth/median {:.2} \
         (min {} median {median} max {} at #{busiest}); first 8 {first:?}",
        all.len() as f64 / secs,
        us(pct(0.50)),
        us(pct(0.99)),
        if median > 0.0 { slow / median } else { 0.0 },
        sorted[0],
        sorted[sorted.len() - 1],
    );
}
