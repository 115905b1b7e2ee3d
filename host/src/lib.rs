//! sockbox: run untrusted socket servers as WebAssembly components, with exactly the network
//! they are granted.
//!
//! This crate is the library behind the `sockbox` binary, for a program that embeds the
//! sandbox (and for the tests): no CLI, progress-bar or charting crate comes with it. A guest
//! is a WASI 0.2 component (a built-in such as `echo`, a `.wasm` file, or a Python guest
//! built with componentize-py). The host instantiates it with no network at all and then
//! grants, one rule of a [`Policy`] at a time, what it may do: listen here, accept from there,
//! connect to that. Every decision is checked before the operation happens, can be watched
//! as an [`AuditEvent`] and written to a JSONL audit log; limits bound its memory, sockets,
//! connections and CPU. The contract (ready lines, exit statuses, audit format, manifest,
//! wire protocols) is `docs/contract.md` in the repository.
//!
//! The entry point is [`Sandbox::builder`]: name a guest, hand it a [`Policy`], start it, wait
//! until its sockets are ready, watch every capability decision, and stop it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use sockbox::{Policy, Sandbox};
//! let policy = Policy::from_flags(&["127.0.0.1:0".into()], &[], &[])?;
//! let mut guest = Sandbox::builder("echo").policy(policy).start().await?;
//! let sockets = guest.ready().await?; // connections succeed from here on
//! println!("echo listens on {}", sockets[0].addr);
//! let exit = guest.stop(std::time::Duration::from_secs(5)).await;
//! assert!(exit.is_clean());
//! # Ok(()) }
//! ```
//!
//! Modules: [`guest`] resolves a guest reference into a compiled [`Guest`] once; [`sandbox`]
//! instantiates, runs and stops guests; [`policy`] decides what a guest may do; [`audit`]
//! records each decision; [`builtin`] holds the embedded guests; [`python`] builds Python
//! guests; [`supervise`] runs the guests of a `sockbox up` manifest side by side and restarts
//! them. The `sockbox` binary is the `sockbox-cli` crate; `sockbox bench` is `sockbox-bench`.

#![warn(missing_docs)]

pub mod audit;
pub mod builtin;
mod compile;
pub mod guest;
pub mod metrics;
pub mod policy;
pub mod python;
pub mod sandbox;
pub mod supervise;

pub use audit::AuditEvent;
pub use compile::CompileCache;
pub use guest::{Guest, GuestSource};
pub use metrics::{GuestMetrics, Metrics};
pub use policy::Policy;
pub use sandbox::{
    GuestExit, ReadySocket, RunningGuest, Sandbox, SandboxBuilder, SocketWatch, Transport, World,
};
