//! A WASI 0.3 listener's accepted connections, counted against the guest's limits.
//!
//! In 0.3, `listen` returns a stream of accepted sockets, filled inside wasmtime-wasi where no
//! function can be replaced. So the host reads that stream itself (the [`Intake`]), enters each
//! connection in the guest's ledger, and passes it on to the stream the guest was given (the
//! [`Outlet`]). A connection over `max-connections` (or the socket caps) is closed at once and
//! recorded as refused; the guest never sees it and goes on waiting for the next one, as with
//! 0.2's `accept`. At most one connection waits between the two streams: the intake takes the
//! next one only once the guest has taken the last, so the OS backlog holds the rest.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use wasmtime::StoreContextMut;
use wasmtime::component::{
    Destination, Resource, Source, StreamConsumer, StreamProducer, StreamReader, StreamResult,
};
use wasmtime_wasi::p3::bindings::sockets::types::HostTcpSocket;
use wasmtime_wasi::sockets::{TcpSocket, WasiSocketsView};

use crate::audit::AuditEvent;
use crate::sandbox::state::HostState;

/// Replaces `listening` (wasmtime-wasi's stream of accepted sockets) with a stream that
/// passes on only the connections the guest's ledger admits.
pub(super) fn counted(
    mut store: StoreContextMut<'_, HostState>,
    listening: StreamReader<Resource<TcpSocket>>,
) -> wasmtime::Result<StreamReader<Resource<TcpSocket>>> {
    let relay = Arc::new(Mutex::new(Relay::default()));
    listening.pipe(&mut store, Intake(relay.clone()))?;
    StreamReader::new(&mut store, Outlet(relay))
}

/// What the two ends share.
#[derive(Default)]
struct Relay {
    /// An admitted connection the guest has not taken yet.
    waiting: Option<Resource<TcpSocket>>,
    /// wasmtime-wasi's stream ended (the listener failed or was closed).
    intake_done: bool,
    /// The guest dropped its stream.
    outlet_done: bool,
    intake_waker: Option<Waker>,
    outlet_waker: Option<Waker>,
}

fn lock(relay: &Mutex<Relay>) -> MutexGuard<'_, Relay> {
    relay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// Reads wasmtime-wasi's accepted sockets.
struct Intake(Arc<Mutex<Relay>>);

impl StreamConsumer<HostState> for Intake {
    type Item = Resource<TcpSocket>;

    fn poll_consume(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'_, HostState>,
        mut source: Source<'_, Self::Item>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let mut relay = lock(&self.0);
        if relay.outlet_done {
            // Nobody will take it: close it (its place in the ledger goes with it).
            if let Some(socket) = relay.waiting.take() {
                close(store.data_mut(), socket)?;
            }
            return Poll::Ready(Ok(StreamResult::Dropped));
        }
        if relay.waiting.is_some() {
            if finish {
                return Poll::Ready(Ok(StreamResult::Cancelled));
            }
            relay.intake_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut accepted = None;
        source.read(&mut store, &mut accepted)?;
        if let Some(socket) = accepted
            && let Some(socket) = admit(store.data_mut(), socket)?
        {
            relay.waiting = Some(socket);
            wake(&mut relay.outlet_waker);
        }
        Poll::Ready(Ok(StreamResult::Completed))
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        let mut relay = lock(&self.0);
        relay.intake_done = true;
        wake(&mut relay.outlet_waker);
    }
}

/// The stream of accepted connections the guest reads.
struct Outlet(Arc<Mutex<Relay>>);

impl StreamProducer<HostState> for Outlet {
    type Item = Resource<TcpSocket>;
    type Buffer = Option<Resource<TcpSocket>>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, HostState>,
        mut dst: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let mut relay = lock(&self.0);
        if relay.waiting.is_some() {
            // A zero-length read asks only whether a connection is there.
            if dst.remaining(&mut store) != Some(0) {
                dst.set_buffer(relay.waiting.take());
                wake(&mut relay.intake_waker);
            }
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        if relay.intake_done {
            return Poll::Ready(Ok(StreamResult::Dropped));
        }
        if finish {
            return Poll::Ready(Ok(StreamResult::Cancelled));
        }
        relay.outlet_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        let mut relay = lock(&self.0);
        relay.outlet_done = true;
        wake(&mut relay.intake_waker);
    }
}

/// Enters an accepted connection in the ledger; one it refuses is closed and recorded.
fn admit(
    state: &mut HostState,
    socket: Resource<TcpSocket>,
) -> wasmtime::Result<Option<Resource<TcpSocket>>> {
    let Err(refusal) = state.ledger.accept(socket.rep(), None) else {
        return Ok(Some(socket));
    };
    let peer =
        HostTcpSocket::get_remote_address(&mut state.sockets(), Resource::new_borrow(socket.rep()))
            .map(|addr| SocketAddr::from(addr).to_string())
            .unwrap_or_else(|_| "unknown".into());
    drop(state.table.delete(socket)?);
    let event = AuditEvent::refused(&state.shared.guest, "tcp-accept", peer, refusal.rule());
    state.shared.record_event(event);
    Ok(None)
}

/// Closes a connection the ledger admitted but the guest will never take.
fn close(state: &mut HostState, socket: Resource<TcpSocket>) -> wasmtime::Result<()> {
    let rep = socket.rep();
    drop(state.table.delete(socket)?);
    state.ledger.release(rep);
    Ok(())
}
