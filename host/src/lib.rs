//! sockbox: run untrusted socket servers as WebAssembly components, with exactly the network
//! they are granted.
//!
//! The entry point is [`Sandbox::builder`]: name a guest (a built-in such as `echo`, or any
//! WASI 0.2 component), hand it a [`Policy`], start it, wait until its sockets are ready,
//! watch every capability decision, and stop it.
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
//! instantiates, runs and stops guests; [`policy`] decides what a
//! guest may do; [`audit`] records each decision; [`builtin`] holds the embedded guests;
//! [`bench`] measures guests against native servers; [`supervise`] runs the guests of a
//! `sockbox up` manifest side by side and restarts them.

pub mod audit;
pub mod bench;
pub mod builtin;
mod compile;
pub mod guest;
pub mod policy;
pub mod python;
pub mod sandbox;
pub mod supervise;

pub use audit::AuditEvent;
pub use compile::CompileCache;
pub use guest::{Guest, GuestSource};
pub use policy::Policy;
pub use sandbox::{
    GuestExit, ReadySocket, RunningGuest, Sandbox, SandboxBuilder, SocketWatch, Transport,
};
