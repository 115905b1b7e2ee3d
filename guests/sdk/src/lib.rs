//! The sockbox guest SDK: everything a sandboxed socket server needs, and nothing it can get wrong.
//!
//! - [`net`]: async TCP listener and stream, async UDP socket, over WASI 0.2 pollables on the
//!   SDK's own runtime (`runtime/`: executor, reactor, timers). Each type owns its streams and
//!   pollables and drops them before their socket, so no guest can trap with "resource has
//!   children".
//! - [`control`]: the addresses the host granted, the ready announcement, the shutdown signal.
//! - [`serve`]: accept loops (TCP) and answer loops (UDP) that serve many clients at once and
//!   stop cleanly on shutdown.
//! - [`framed`], [`lines`]: frames and lines read from a connection, over the [`wire`] codecs
//!   (pure code over bytes).
//! - [`channel`]: queues between tasks (bounded, or unbounded), for servers that fan messages
//!   out.
//! - [`timeouts`]: per-connection idle and read timeouts, on by default in [`framed`] and
//!   [`lines`]; [`options`]: the guest arguments that set them (and byte limits).
//! - [`io`]: `futures-lite`'s `AsyncRead`/`AsyncWrite` helpers (`copy`, `BufReader`,
//!   `AsyncBufReadExt`...), which [`net::TcpStream`] and its halves implement.
//! - [`future`]: combinators (`zip`, `try_zip`, `or`...) to run futures side by side in a task.
//! - [`spawn`], [`sleep`], [`timeout`]: tasks and time on the runtime.
//!
//! A guest's `main` is usually `sockbox_guest::run(async { ... })` around one of the
//! [`serve`] helpers, or, for a guest that builds for WASI 0.2 and 0.3 from one source,
//! [`main!`] around the same future.
//!
//! Two backends, one API: WASI 0.2 (the default; `runtime/`, `net/`, `streams.rs`,
//! `control.rs`) and WASI 0.3 with the cargo feature `p3` (the same modules under `p3/`, on
//! `wasip3` and wit-bindgen's executor). Everything else is shared.

#[cfg(not(any(feature = "p2", feature = "p3")))]
compile_error!("sockbox-guest needs a backend: its feature `p2` (the default) or `p3`");

pub mod channel;
#[cfg_attr(feature = "p3", path = "p3/control.rs")]
pub mod control;
mod drain;
pub mod framed;
pub mod lines;
mod main_macro;
#[cfg_attr(feature = "p3", path = "p3/net/mod.rs")]
pub mod net;
pub mod options;
#[cfg_attr(feature = "p3", path = "p3/runtime/mod.rs")]
mod runtime;
pub mod serve;
#[cfg_attr(feature = "p3", path = "p3/streams/mod.rs")]
mod streams;
pub mod timeouts;

pub use futures_lite::{future, io};
pub use runtime::{Elapsed, Sleep, Task, sleep, spawn, timeout};
pub use sockbox_wire as wire;
pub use std::time::Duration;

#[cfg(feature = "p3")]
#[doc(hidden)]
pub use main_macro::p3 as __p3;

use std::future::Future;
use std::process::ExitCode;

/// Runs the guest's async main (and the tasks it spawns) on the SDK's runtime and turns an
/// error into exit status 1 with the error chain on stderr (the host reports it as a guest
/// failure). When `main` ends, tasks still running are cancelled.
#[cfg(not(feature = "p3"))]
pub fn run<F, E>(main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match runtime::block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the guest's async main (and the tasks it spawns) on wit-bindgen's executor, inside the
/// export of `wasi:cli/run@0.3` (see [`main!`]), and turns an error into exit status 1 with the
/// error chain on stderr. When `main` ends, tasks still running are cancelled. Async, unlike the
/// 0.2 `run`: a 0.3 component has no `main` to block in.
#[cfg(feature = "p3")]
pub async fn run<F, E>(main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match runtime::run_main(main).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The guest's command-line arguments after the program name (`sockbox run g -- ARGS`).
pub fn args() -> Vec<String> {
    std::env::args().skip(1).collect()
}
