//! Bytes and datagrams counted for metrics (WASI 0.2): the stream functions a guest moves a
//! connection's bytes with, and UDP's `send`, answered as wasmtime-wasi does, plus the count.
//!
//! Only a connection's streams count (the ledger knows them), never stdin, stdout or stderr.
//! `read`, `blocking-read`, `splice`, `blocking-splice` and `blocking-write-and-flush` are
//! replaced here; `write` is replaced by `linger` and calls [`sent`]; `receive` is replaced by
//! `udp` and calls [`received_datagrams`]. `skip` and the `write-zeroes` pair are not
//! counted (no guest moves traffic with them).

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sockets::network::Host as _;
use wasmtime_wasi::p2::bindings::sockets::udp::{
    HostOutgoingDatagramStream, IncomingDatagram, OutgoingDatagram, OutgoingDatagramStream,
};
use wasmtime_wasi::sockets::WasiSocketsView;
use wasmtime_wasi_io::bindings::wasi::io::streams as wit;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, StreamError};

use super::{STREAMS, UDP};
use crate::sandbox::state::{HostState, Shared};

/// Replaces the stream and datagram functions named in the module's documentation.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    let mut streams = linker.instance(STREAMS)?;
    streams.func_wrap(
        "[method]input-stream.read",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, len): (Resource<DynInputStream>, u64)| {
            let state = store.data_mut();
            let rep = stream.rep();
            let result = wit::HostInputStream::read(&mut state.table, stream, len);
            if let Ok(bytes) = &result {
                received(state, rep, bytes.len());
            }
            Ok((guest_result(&mut state.table, result)?,))
        },
    )?;
    streams.func_wrap_async(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, len): (Resource<DynInputStream>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let rep = stream.rep();
                let result =
                    wit::HostInputStream::blocking_read(&mut state.table, stream, len).await;
                if let Ok(bytes) = &result {
                    received(state, rep, bytes.len());
                }
                Ok((guest_result(&mut state.table, result)?,))
            })
        },
    )?;
    streams.func_wrap_async(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, contents): (Resource<DynOutputStream>, Vec<u8>)| {
            Box::new(async move {
                let state = store.data_mut();
                let (rep, len) = (stream.rep(), contents.len());
                let result = wit::HostOutputStream::blocking_write_and_flush(
                    &mut state.table,
                    stream,
                    contents,
                )
                .await;
                if result.is_ok() {
                    sent(state, rep, len);
                }
                Ok((guest_result(&mut state.table, result)?,))
            })
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.splice",
        |mut store: StoreContextMut<'_, HostState>,
         (to, from, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let state = store.data_mut();
            let (to_rep, from_rep) = (to.rep(), from.rep());
            let result = wit::HostOutputStream::splice(&mut state.table, to, from, len);
            if let Ok(moved) = &result {
                spliced(state, from_rep, to_rep, *moved);
            }
            Ok((guest_result(&mut state.table, result)?,))
        },
    )?;
    streams.func_wrap_async(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, HostState>,
         (to, from, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let (to_rep, from_rep) = (to.rep(), from.rep());
                let result =
                    wit::HostOutputStream::blocking_splice(&mut state.table, to, from, len).await;
                if let Ok(moved) = &result {
                    spliced(state, from_rep, to_rep, *moved);
                }
                Ok((guest_result(&mut state.table, result)?,))
            })
        },
    )?;
    linker.instance(UDP)?.func_wrap(
        "[method]outgoing-datagram-stream.send",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, datagrams): (Resource<OutgoingDatagramStream>, Vec<OutgoingDatagram>)| {
            let state = store.data_mut();
            let sizes: Vec<usize> = datagrams.iter().map(|d| d.data.len()).collect();
            let metrics = state.shared.metrics.clone();
            let mut view = state.sockets();
            let result = HostOutgoingDatagramStream::send(&mut view, stream, datagrams);
            let result = match result {
                Ok(count) => {
                    let bytes = sizes.iter().take(count as usize).sum();
                    metrics.datagrams_sent(count as usize, bytes);
                    Ok(count)
                }
                Err(err) => Err(view.convert_error_code(err)?),
            };
            Ok((result,))
        },
    )?;
    Ok(())
}

/// The guest read `bytes` from stream `rep`.
fn received(state: &HostState, rep: u32, bytes: usize) {
    if state.ledger.is_connection_input(rep) {
        state.ledger.metrics().received(bytes);
    }
}

/// The guest wrote `bytes` to stream `rep` (`linger`'s `write` calls this too).
pub(super) fn sent(state: &HostState, rep: u32, bytes: usize) {
    if state.ledger.is_connection_output(rep) {
        state.ledger.metrics().sent(bytes);
    }
}

/// `moved` bytes went from stream `from` to stream `to` (an echo moves them between its
/// connection's own two).
fn spliced(state: &HostState, from: u32, to: u32, moved: u64) {
    let moved = usize::try_from(moved).unwrap_or(usize::MAX);
    received(state, from, moved);
    sent(state, to, moved);
}

/// The datagrams `udp`'s `receive` hands the guest.
pub(super) fn received_datagrams(shared: &Shared, datagrams: &[IncomingDatagram]) {
    let bytes = datagrams.iter().map(|d| d.data.len()).sum();
    shared.metrics.datagrams_received(datagrams.len(), bytes);
}

/// The guest's view of a stream result, as wasmtime-wasi's bindings make it.
fn guest_result<T>(
    table: &mut ResourceTable,
    result: Result<T, StreamError>,
) -> wasmtime::Result<Result<T, wit::StreamError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(err) => Ok(Err(wit::Host::convert_stream_error(table, err)?)),
    }
}
