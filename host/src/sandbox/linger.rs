//! Dropping an output stream never blocks the guest.
//!
//! wasmtime-wasi's drop of a `wasi:io/streams.output-stream` waits for the write in flight to
//! finish, so no byte the guest wrote is silently lost. But a TCP peer that never reads keeps
//! that write pending forever, and the guest's only thread waits with it: one sleeping client
//! would freeze every other client and keep the guest from stopping. The host replaces that
//! destructor with one that takes the stream out of the guest's table at once and finishes
//! the write in the background, for at most [`LINGER`], like a socket's `SO_LINGER` on close.

use std::time::Duration;

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi_io::streams::DynOutputStream;

use super::state::HostState;

const STREAMS: &str = "wasi:io/streams@0.2.12";

/// How long a dropped stream's last write may take before it is abandoned.
pub(crate) const LINGER: Duration = Duration::from_secs(30);

/// Replaces the output-stream destructor. Must run after wasmtime-wasi's own `add_to_linker`.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.allow_shadowing(true);
    linker.instance(STREAMS)?.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            // Fails (a trap, as before) if a pollable of the stream is still alive.
            let mut stream = store
                .data_mut()
                .table
                .delete(Resource::<DynOutputStream>::new_own(rep))?;
            tokio::spawn(async move {
                if tokio::time::timeout(LINGER, stream.cancel()).await.is_err() {
                    tracing::debug!("a dropped stream's last write was abandoned after {LINGER:?}");
                }
            });
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
