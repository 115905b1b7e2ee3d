//! Dropping an output stream never blocks the guest.
//!
//! wasmtime-wasi's drop of a `wasi:io/streams.output-stream` waits for the write in flight to
//! finish, so no byte the guest wrote is silently lost. But a TCP peer that never reads keeps
//! that write pending forever, and the guest's only thread waits with it: one sleeping client
//! would freeze every other client and keep the guest from stopping. The host replaces that
//! destructor with one that takes the stream out of the guest's table at once and finishes
//! the write in the background, for at most [`LINGER`], like a socket's `SO_LINGER` on close.
//!
//! A lingering close still holds the connection's descriptor, so it stays counted against the
//! guest's `max-sockets` and the process's descriptor budget until it is done (see
//! `limits::Linger`): a guest cannot trade its sockets for lingering closes without bound,
//! and at its cap it meets `new-socket-limit`, never the host's descriptor limit.

use std::time::Duration;

use anyhow::Result;
use futures::FutureExt;
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
            let state = store.data_mut();
            // Fails (a trap, as before) if a pollable of the stream is still alive.
            let mut stream = state
                .table
                .delete(Resource::<DynOutputStream>::new_own(rep))?;
            // Most streams have nothing in flight: they close here and now.
            let pending = stream.cancel().now_or_never().is_none();
            let linger = state.ledger.output_dropped(rep, pending);
            if pending {
                tokio::spawn(async move {
                    if tokio::time::timeout(LINGER, stream.cancel()).await.is_err() {
                        tracing::debug!(
                            "a dropped stream's last write was abandoned after {LINGER:?}"
                        );
                    }
                    drop(stream);
                    if let Some(linger) = linger {
                        linger.finished();
                    }
                });
            }
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
