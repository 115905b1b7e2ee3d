//! Linking: everything a guest may import, built once per engine, and every place where
//! sockbox answers a WASI function itself instead of wasmtime-wasi.
//!
//! The linker starts from wasmtime-wasi's WASI 0.2 and shadows single functions, one module per
//! concern: [`readiness`] (a socket is ready), [`errors`] (no host stack in guest-visible
//! errors), [`linger`] (dropping a stream never blocks), [`sockets`] (sockets counted against
//! the guest's limits), [`udp`] (datagrams judged per socket), [`bind`] (shared ports claimed),
//! [`dns`] (names judged by the policy), [`traffic`] (bytes and datagrams counted for
//! metrics) and [`control`] (`sockbox:guest/control`). The names
//! of the interfaces they shadow are written here once.

mod bind;
mod control;
mod dns;
mod errors;
mod linger;
mod p3;
mod readiness;
mod sockets;
mod traffic;
mod udp;

use std::sync::OnceLock;

use anyhow::Result;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime_wasi::p2::SocketError;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Host as _};
use wasmtime_wasi::p3::bindings::CommandIndices;
use wasmtime_wasi::sockets::WasiSocketsCtxView;

use super::state::HostState;
use crate::compile;

pub(crate) const TCP: &str = "wasi:sockets/tcp@0.2.12";
pub(crate) const UDP: &str = "wasi:sockets/udp@0.2.12";
pub(crate) const TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";
pub(crate) const UDP_CREATE: &str = "wasi:sockets/udp-create-socket@0.2.12";
pub(crate) const NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";
pub(crate) const STREAMS: &str = "wasi:io/streams@0.2.12";
pub(crate) const ERROR: &str = "wasi:io/error@0.2.12";
/// The filesystem package, all its interfaces.
pub(crate) const FILESYSTEM: &str = "wasi:filesystem";
/// What a component imports when it speaks `control`.
pub(crate) const CONTROL: &str = "sockbox:guest/control";
/// What a WASI 0.3 component imports to hear that it must stop.
pub(crate) const STOP: &str = "sockbox:guest/stop";

/// An interface name without its version: `wasi:sockets/tcp`.
pub(crate) fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(name, _)| name)
}

/// The linker, built at the first use: the engine is one per process, and a linker only
/// reads it.
fn linker() -> Result<&'static Linker<HostState>> {
    static LINKER: OnceLock<Linker<HostState>> = OnceLock::new();
    if let Some(linker) = LINKER.get() {
        return Ok(linker);
    }
    let linker = build()?;
    Ok(LINKER.get_or_init(|| linker))
}

/// Everything a guest may import: WASI 0.2 and 0.3 with sockbox's functions in place of some,
/// plus `control` and `stop`.
fn build() -> Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(compile::engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    // Everything below replaces a function wasmtime-wasi just defined, except `control`.
    linker.allow_shadowing(true);
    readiness::add_hooks(&mut linker)?;
    errors::add_hooks(&mut linker)?;
    linger::add_hooks(&mut linker)?;
    sockets::add_hooks(&mut linker)?;
    udp::add_hooks(&mut linker)?;
    bind::add_hooks(&mut linker)?;
    dns::add_to_linker(&mut linker)?;
    traffic::add_hooks(&mut linker)?;
    p3::add_to_linker(&mut linker)?;
    linker.allow_shadowing(false);
    control::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Which WASI a guest is built for, read from its `wasi:cli/run` export. Its imports cannot
/// tell: a 0.3 component built for `wasm32-wasip2` imports 0.2 as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    /// WASI 0.2: exports `wasi:cli/run@0.2.*` (or no `run` at all, refused as not a command).
    P2,
    /// WASI 0.3: exports `wasi:cli/run@0.3.*`.
    P3,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::P2 => "WASI 0.2",
            World::P3 => "WASI 0.3",
        })
    }
}

/// The world of `component`; a component exporting both `run`s is refused.
pub(crate) fn world(component: &Component, guest: &str) -> Result<World> {
    let runs: Vec<String> = component
        .component_type()
        .exports(compile::engine())
        .map(|(name, _)| name.to_string())
        .filter(|name| name.starts_with("wasi:cli/run@"))
        .collect();
    let p3 = runs
        .iter()
        .any(|name| name.starts_with("wasi:cli/run@0.3."));
    let p2 = runs
        .iter()
        .any(|name| name.starts_with("wasi:cli/run@0.2."));
    match (p2, p3) {
        (true, true) => anyhow::bail!(
            "guest `{guest}` exports both wasi:cli/run@0.2 and @0.3: which one to run is unclear"
        ),
        (false, true) => Ok(World::P3),
        _ => Ok(World::P2),
    }
}

/// A guest type-checked against the sandbox, ready to instantiate in either world.
#[derive(Clone)]
pub(crate) enum CommandPre {
    P2(wasmtime_wasi::p2::bindings::CommandPre<HostState>),
    P3(InstancePre<HostState>, CommandIndices),
}

/// Type-checks `component` against the sandbox: every import provided, `wasi:cli/run` exported.
pub(crate) fn prepare(component: &Component, guest: &str) -> Result<CommandPre> {
    let world = world(component, guest)?;
    // Imports first, so a forbidden import is named even if exports are wrong too.
    let pre = linker()?
        .instantiate_pre(component)
        .map_err(|err| describe_link_error(err.into(), guest))?;
    match world {
        World::P2 => wasmtime_wasi::p2::bindings::CommandPre::new(pre)
            .map(CommandPre::P2)
            .map_err(|err| {
                anyhow::Error::from(err).context(format!(
                    "guest `{guest}` is not a WASI 0.2 command: it must export wasi:cli/run"
                ))
            }),
        World::P3 => match CommandIndices::new(&pre) {
            Ok(indices) => Ok(CommandPre::P3(pre, indices)),
            Err(err) => Err(anyhow::Error::from(err).context(format!(
                "guest `{guest}` is not a WASI 0.3 command: its wasi:cli/run@0.3 is not `run`"
            ))),
        },
    }
}

/// Whether the component speaks `sockbox:guest/control` or `stop`: it hears the host ask it
/// to stop, so it is given the grace period to drain.
pub(crate) fn imports_control(component: &Component) -> bool {
    component
        .component_type()
        .imports(compile::engine())
        .any(|(import, _)| import.starts_with(CONTROL) || import.starts_with(STOP))
}

/// Turns wasmtime's "no implementation for import X" into a message about the sandbox.
fn describe_link_error(err: anyhow::Error, guest: &str) -> anyhow::Error {
    let text = format!("{err:#}");
    if text.contains("matching implementation was not found in the linker") {
        err.context(format!(
            "guest `{guest}` imports something the sockbox:guest/server world does not provide \
             (only WASI 0.2 and 0.3 cli, clocks, random, io, sockets, filesystem types and \
             sockbox:guest/control and stop are available)"
        ))
    } else {
        err.context(format!("cannot link guest `{guest}`"))
    }
}

/// Splits a socket result into the guest's error code or a trap, as the generated bindings do.
fn guest_code<T>(
    view: &mut WasiSocketsCtxView<'_>,
    result: Result<T, SocketError>,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(err) => Ok(Err(view.convert_error_code(err)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linker_is_built_once() {
        let first: *const Linker<HostState> = linker().unwrap();
        let again: *const Linker<HostState> = linker().unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn an_interface_name_without_its_version() {
        for (name, bare) in [
            (TCP, "wasi:sockets/tcp"),
            (NAME_LOOKUP, "wasi:sockets/ip-name-lookup"),
            (CONTROL, CONTROL),
        ] {
            assert_eq!(unversioned(name), bare);
        }
    }
}
