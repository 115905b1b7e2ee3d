//! Linking WASI 0.3: wasmtime-wasi's `p3` interfaces, with sockbox's functions in place of some,
//! and `sockbox:guest/stop`.
//!
//! A 0.3 component built for `wasm32-wasip2` imports 0.2 as well (Rust's standard library is
//! still 0.2), so the 0.3 interfaces are added to the same linker as 0.2's, and every 0.2 shadow
//! stays in force for such a guest. The address check ([`crate::sandbox::network`]) governs
//! 0.3 sockets unchanged: wasmtime-wasi's 0.3 sockets are the same host sockets as 0.2's, and
//! carry the same check. What sockbox does by replacing 0.2 functions gets its 0.3 twin here:
//! sockets counted against the guest's limits and readiness ([`sockets`]), accepted connections
//! counted ([`accept`]), shared ports ([`bind`]), names judged by the policy ([`dns`]),
//! datagrams counted for metrics ([`traffic`]).
//!
//! 0.3 has no `wasi:io/error` (errors are codes), so `errors` has no twin; nor has `linger`: a
//! 0.3 write stays in the guest's memory until the socket takes it (wasmtime-wasi writes from the
//! guest's buffer straight to the socket), so dropping a send stream waits for nothing and
//! leaves no write behind in the host.

mod accept;
mod bind;
mod dns;
mod sockets;
mod stop;
mod traffic;

use anyhow::Result;
use wasmtime::component::Linker;
use wasmtime_wasi::p3::bindings::sockets::types::ErrorCode;
use wasmtime_wasi::p3::sockets::SocketError;

use crate::sandbox::state::HostState;

/// The 0.3 sockets interface as wasmtime-wasi 50 names it; a guest built on `wasip3` 0.10
/// imports `@0.3.2`, which the linker's semver matching resolves to this.
pub(crate) const SOCKETS: &str = "wasi:sockets/types@0.3.0";
pub(crate) const NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.3.0";

/// Adds WASI 0.3 and its shadows to a linker that has WASI 0.2 already. Shadowing must be
/// allowed by the caller.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wasmtime_wasi::p3::add_to_linker(linker).map_err(anyhow::Error::from)?;
    sockets::add_hooks(linker)?;
    bind::add_hooks(linker)?;
    dns::add_to_linker(linker)?;
    stop::add_to_linker(linker)?;
    traffic::add_hooks(linker)?;
    Ok(())
}

/// A socket result as the guest sees it: its error code, or a trap (which stays a trap).
fn guest_code<T>(result: Result<T, SocketError>) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(err) => Ok(Err(err.downcast()?)),
    }
}
