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
//! `ledger::Linger`): a guest cannot trade its sockets for lingering closes without bound,
//! and at its cap it meets `new-socket-limit`, never the host's descriptor limit.
//!
//! Writes of nothing (`write` of an empty list, `write-zeroes` of 0) never reach a stream: the
//! host answers them with the stream's state (`check-write`). wasmtime-wasi 50.0.1's
//! `AsyncWriteStream` queues every write, an empty one included and whatever its budget, so a
//! guest writing nothing in a loop to a stream whose writer is slow grows the host's memory
//! without bound (GHSA-5m8g-xhq4-4h93, fixed in 50.0.2). None of sockbox's streams is one today
//! (TCP has its own writer, stdout and stderr write through at once or into a bounded pipe);
//! this keeps any later one safe.

use std::time::Duration;

use anyhow::Result;
use futures::FutureExt;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime_wasi_io::bindings::wasi::io::streams as wit;
use wasmtime_wasi_io::streams::{DynOutputStream, StreamError};

use super::STREAMS;
use crate::sandbox::state::HostState;

/// How long a dropped stream's last write may take before it is abandoned.
const LINGER: Duration = Duration::from_secs(30);

/// Replaces the output-stream destructor, `write` and `write-zeroes`.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(STREAMS)?.func_wrap(
        "[method]output-stream.write",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, contents): (Resource<DynOutputStream>, Vec<u8>)| {
            let state = store.data_mut();
            let (rep, len) = (stream.rep(), contents.len());
            let result = write(&mut state.table, &stream, contents);
            if result.is_ok() {
                super::traffic::sent(state, rep, len);
            }
            Ok((guest_result(&mut state.table, result)?,))
        },
    )?;
    linker.instance(STREAMS)?.func_wrap(
        "[method]output-stream.write-zeroes",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, len): (Resource<DynOutputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let result = match usize::try_from(len) {
                Ok(0) => write(table, &stream, Vec::new()),
                Ok(len) => table.get_mut(&stream)?.write_zeroes(len),
                Err(_) => Err(StreamError::trap("cannot write that many zeroes")),
            };
            Ok((guest_result(table, result)?,))
        },
    )?;
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
    Ok(())
}

/// `output-stream.write`, with a write of nothing answered by the stream's state instead of
/// being handed to it (see the module's documentation).
fn write(
    table: &mut ResourceTable,
    stream: &Resource<DynOutputStream>,
    contents: Vec<u8>,
) -> Result<(), StreamError> {
    let stream = table.get_mut(stream)?;
    if contents.is_empty() {
        return stream.check_write().map(drop);
    }
    stream.write(contents.into())
}

/// The guest's view of a stream result, as wasmtime-wasi's bindings make it: an error the
/// guest can inspect, or a trap.
fn guest_result(
    table: &mut ResourceTable,
    result: Result<(), StreamError>,
) -> wasmtime::Result<Result<(), wit::StreamError>> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(err) => Ok(Err(wit::Host::convert_stream_error(table, err)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A stream that only counts what it is asked to do.
    #[derive(Clone, Default)]
    struct Counting(Arc<Mutex<(usize, usize)>>);

    #[async_trait::async_trait]
    impl wasmtime_wasi_io::poll::Pollable for Counting {
        async fn ready(&mut self) {}
    }

    impl wasmtime_wasi_io::streams::OutputStream for Counting {
        fn write(&mut self, _: wasmtime_wasi_io::bytes::Bytes) -> Result<(), StreamError> {
            self.0.lock().unwrap().0 += 1;
            Ok(())
        }
        fn flush(&mut self) -> Result<(), StreamError> {
            Ok(())
        }
        fn check_write(&mut self) -> Result<usize, StreamError> {
            self.0.lock().unwrap().1 += 1;
            Ok(0)
        }
    }

    #[test]
    fn a_write_of_nothing_never_reaches_the_stream() {
        let counting = Counting::default();
        let mut table = ResourceTable::new();
        let stream: DynOutputStream = Box::new(counting.clone());
        let stream = table.push(stream).unwrap();
        for _ in 0..1000 {
            write(&mut table, &stream, Vec::new()).unwrap();
        }
        write(&mut table, &stream, b"x".to_vec()).unwrap();
        assert_eq!(*counting.0.lock().unwrap(), (1, 1000));
    }
}
