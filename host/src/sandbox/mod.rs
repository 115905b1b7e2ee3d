//! Instantiate, run and stop a guest: the one place where a sandbox is put together.
//!
//! [`Sandbox::builder`] gathers the guest, its [`Policy`](crate::policy::Policy) and where
//! decisions go; [`SandboxBuilder::start`] takes the compiled [`Guest`] (resolved once by
//! [`crate::guest`], which owns files, built-ins and Python), type-checks it once, instantiates
//! it (load errors surface here, before anything runs) and starts `wasi:cli/run` on the tokio
//! runtime; [`RunningGuest`] waits for readiness, exposes decisions, asks the guest to stop and
//! reports how it ended.
//!
//! One module per concern. From the top: `builder` (the entry point), `instance` (the guest
//! prepared once, a store per start), `running` (a started guest), `link` (the linker and
//! every WASI function sockbox answers itself); `state` composes what a store holds from the
//! leaves below it, which know nothing of it: `ledger` (sockets against their caps),
//! `limiter` (wasm memory and tables), `limits` (defaults and the descriptor budget),
//! `ports` (who shares which address), `reuseport` (`SO_REUSEPORT` on a WASI socket),
//! `udp_sockets` (each UDP socket's state), `busy` (the busy watch), `output` (what a
//! guest prints), `errors` (errors without the host's stack), `types` (what a user gets back).

mod builder;
mod busy;
mod errors;
mod inspect;
mod instance;
mod ledger;
mod limiter;
mod limits;
mod link;
mod network;
mod observe;
mod output;
mod ports;
mod reuseport;
mod running;
mod state;
mod types;
mod udp_sockets;

pub use crate::compile::CompileCache;
pub use crate::guest::{Guest, GuestSource};
pub(crate) use builder::check_instances;
pub use builder::{Sandbox, SandboxBuilder};
pub use inspect::{Inspection, inspect};
pub(crate) use ledger::guest_sockets;
pub use limits::{FdBudget, fd_budget};
pub use link::World;
pub use output::{drain_output, guest_line, host_line, host_lines_as_json};
pub(crate) use ports::overlaps;
pub use running::{RunningGuest, SocketWatch};
pub use types::{GuestExit, ReadySocket, Transport};
