//! The host side of `sockbox:guest/stop`: a future that resolves once the host wants the guest
//! to stop, the 0.3 form of `control.shutdown`'s pollable (the same signal: SIGINT, SIGTERM,
//! the supervisor).

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{FutureReader, Linker};

use crate::sandbox::state::HostState;

/// Where a component imports `stop` from (linked by the version the host's WIT gives it).
const STOP: &str = "sockbox:guest/stop@0.1.0";

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(STOP)?.func_wrap(
        "requested",
        |mut store: StoreContextMut<'_, HostState>, (): ()| {
            let mut stop = store.data().shared.shutdown.subscribe();
            let requested = FutureReader::new(&mut store, async move {
                // An error means the host side is gone: that is a stop too.
                let _ = stop.wait_for(|stop| *stop).await;
                wasmtime::error::Ok(())
            })?;
            Ok((requested,))
        },
    )?;
    Ok(())
}
