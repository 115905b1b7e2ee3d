//! `wasi:io/error.to-debug-string` answered with the error's one-line chain, never the host's
//! stack (see `sandbox/errors.rs` for why).

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};

use super::ERROR;
use crate::sandbox::errors::one_line;
use crate::sandbox::state::HostState;

/// Replaces `[method]error.to-debug-string`.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(ERROR)?.func_wrap(
        "[method]error.to-debug-string",
        |store: StoreContextMut<'_, HostState>, (err,): (Resource<wasmtime::Error>,)| {
            let err = store.data().table.get(&err)?;
            tracing::debug!(
                "error shown to guest `{}`: {err:?}",
                store.data().shared.guest
            );
            Ok((one_line(err),))
        },
    )?;
    Ok(())
}
