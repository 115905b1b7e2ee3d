//! Accept loops and datagram loops that serve many clients at once and stop cleanly when the
//! host says so.
//!
//! Every connection runs as its own task on the single-threaded reactor (socketserver's
//! `ThreadingMixIn`, without threads). On shutdown the loop stops accepting, lets connections
//! that hold a request ([`InHand`]: a frame begun and not yet answered) finish it, for up to
//! [`DRAIN_PERIOD`], then cancels the connection tasks while the reactor is still running, so
//! their sockets are dropped in order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use crate::control;
pub use crate::drain::InHand;
use crate::net::{TcpListener, TcpStream, UdpSocket};
use crate::runtime::{Task, spawn, timeout};

/// How long a shutdown waits for requests in hand to be answered: well inside the 5 s the
/// host's `sockbox run` grants a guest to stop.
pub const DRAIN_PERIOD: Duration = Duration::from_secs(3);

/// Binds every address the host granted with `--listen`. Fails if there is none.
pub async fn listen_granted() -> io::Result<Vec<TcpListener>> {
    let addrs = control::listen_addresses();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no TCP listen address granted (run with --listen ADDR)",
        ));
    }
    listen_on(addrs).await
}

/// Binds every address the host granted with `--udp`. Fails if there is none.
pub async fn bind_granted_udp() -> io::Result<Vec<UdpSocket>> {
    let addrs = control::udp_addresses();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no UDP address granted (run with --udp ADDR)",
        ));
    }
    bind_udp(addrs).await
}

/// Binds every `--listen` and every `--udp` address granted, for a guest that serves both
/// transports. Fails if neither kind was granted.
pub async fn bind_all_granted() -> io::Result<(Vec<TcpListener>, Vec<UdpSocket>)> {
    let (tcp, udp) = (control::listen_addresses(), control::udp_addresses());
    if tcp.is_empty() && udp.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address granted (run with --listen ADDR and/or --udp ADDR)",
        ));
    }
    Ok((listen_on(tcp).await?, bind_udp(udp).await?))
}

async fn listen_on(addrs: Vec<SocketAddr>) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

async fn bind_udp(addrs: Vec<SocketAddr>) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("bind UDP {addr}: {e}")))?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Serves TCP clients on every granted `--listen` address until shutdown: announces ready,
/// then runs `handler` for each connection in its own task. A handler's error is logged to
/// stderr and closes only that connection.
pub async fn serve_tcp<H, F>(handler: H) -> io::Result<()>
where
    H: Fn(TcpStream, SocketAddr) -> F + 'static,
    F: Future<Output = io::Result<()>> + 'static,
{
    let listeners = listen_granted().await?;
    control::ready();
    accept_until_shutdown(listeners, handler).await
}

/// Runs the accept loops of already bound `listeners` until the host asks to stop.
/// Use this when a guest binds its own sockets (for example TCP and UDP together).
pub async fn accept_until_shutdown<H, F>(listeners: Vec<TcpListener>, handler: H) -> io::Result<()>
where
    H: Fn(TcpStream, SocketAddr) -> F + 'static,
    F: Future<Output = io::Result<()>> + 'static,
{
    let connections = Connections::default();
    let handler = Rc::new(handler);
    let loops = listeners
        .into_iter()
        .map(|listener| spawn(accept_loop(listener, handler.clone(), connections.clone())))
        .collect::<Vec<_>>();
    control::shutdown().await;
    // No new connections; then the requests in hand are answered; then every connection goes.
    drop(loops);
    drain().await;
    connections.cancel_all();
    Ok(())
}

/// Waits until no connection holds a request in hand, for at most [`DRAIN_PERIOD`].
async fn drain() {
    // Bytes that came with (or just before) the shutdown signal are noticed in the same poll:
    // a round for their connections to read them and mark their requests in hand.
    future::yield_now().await;
    future::yield_now().await;
    if timeout(DRAIN_PERIOD, crate::drain::all_answered())
        .await
        .is_err()
    {
        eprintln!(
            "shutdown: requests still unanswered after {DRAIN_PERIOD:?}; closing their connections"
        );
    }
}

/// Serves UDP on every granted `--udp` address until shutdown: announces ready, then
/// answers each datagram with one datagram holding `reply(payload)`, sent back to its sender.
pub async fn serve_udp<R>(reply: R) -> io::Result<()>
where
    R: Fn(Vec<u8>) -> Vec<u8> + 'static,
{
    let sockets = bind_granted_udp().await?;
    control::ready();
    answer_until_shutdown(sockets, reply).await
}

/// Serves every granted socket until shutdown, for a service on both transports: TCP
/// connections on the `--listen` addresses with `handler` (as [`serve_tcp`]), datagrams on the
/// `--udp` addresses with `reply` (as [`serve_udp`]). At least one address must be granted.
pub async fn serve_tcp_and_udp<H, F, R>(handler: H, reply: R) -> io::Result<()>
where
    H: Fn(TcpStream, SocketAddr) -> F + 'static,
    F: Future<Output = io::Result<()>> + 'static,
    R: Fn(Vec<u8>) -> Vec<u8> + 'static,
{
    let (listeners, sockets) = bind_all_granted().await?;
    let datagram_loops = spawn_answer_loops(sockets, reply);
    control::ready();
    accept_until_shutdown(listeners, handler).await?;
    drop(datagram_loops);
    Ok(())
}

/// Answers the datagrams of already bound `sockets`, each in its own task, until the host
/// asks to stop. Datagrams are taken and answered in batches; a reply that cannot be sent is
/// logged and the others still go out.
pub async fn answer_until_shutdown<R>(sockets: Vec<UdpSocket>, reply: R) -> io::Result<()>
where
    R: Fn(Vec<u8>) -> Vec<u8> + 'static,
{
    let loops = spawn_answer_loops(sockets, reply);
    control::shutdown().await;
    // Cancelled while the reactor still runs, so each socket is dropped after its streams.
    drop(loops);
    Ok(())
}

fn spawn_answer_loops<R>(sockets: Vec<UdpSocket>, reply: R) -> Vec<Task<()>>
where
    R: Fn(Vec<u8>) -> Vec<u8> + 'static,
{
    let reply = Rc::new(reply);
    sockets
        .into_iter()
        .map(|socket| spawn(answer_loop(socket, reply.clone())))
        .collect()
}

/// Datagrams an answer loop takes per receive: enough that host calls cost well under one per
/// datagram, few enough that a batch's first replies are not held back while the host receives
/// the rest (clients waiting on replies feel that; 4 beat 8 and 16 in `sockbox bench`).
const ANSWER_BATCH: usize = 4;

async fn answer_loop<R>(socket: UdpSocket, reply: Rc<R>)
where
    R: Fn(Vec<u8>) -> Vec<u8>,
{
    loop {
        match socket.recv_batch(ANSWER_BATCH).await {
            Ok(datagrams) => {
                let replies = datagrams
                    .into_iter()
                    .map(|(datagram, peer)| (reply(datagram), peer));
                for (peer, err) in socket.send_batch(replies).await {
                    eprintln!("reply to {peer}: {err}");
                }
            }
            Err(err) => {
                eprintln!("receive: {err}");
                crate::sleep(crate::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Runs `work` and returns when it ends or the host asks to stop, whichever is first.
pub async fn until_shutdown<F>(work: F) -> io::Result<()>
where
    F: Future<Output = io::Result<()>>,
{
    future::or(work, async {
        control::shutdown().await;
        Ok(())
    })
    .await
}

async fn accept_loop<H, F>(listener: TcpListener, handler: Rc<H>, connections: Connections)
where
    H: Fn(TcpStream, SocketAddr) -> F + 'static,
    F: Future<Output = io::Result<()>> + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let work = handler(stream, peer);
                connections.spawn(async move {
                    if let Err(err) = work.await {
                        // A broken client is routine for a server: note it, keep serving.
                        eprintln!("connection {peer}: {err}");
                    }
                });
            }
            Err(err) => {
                eprintln!("accept: {err}");
                // Do not spin on a persistent error; give the host a moment.
                crate::sleep(crate::Duration::from_millis(10)).await;
            }
        }
    }
}

/// The live connection tasks, so shutdown can cancel them while the reactor still runs.
#[derive(Clone, Default)]
struct Connections {
    inner: Rc<RefCell<ConnectionsInner>>,
}

#[derive(Default)]
struct ConnectionsInner {
    next_id: u64,
    tasks: HashMap<u64, Task<()>>,
}

impl Connections {
    fn spawn(&self, work: impl Future<Output = ()> + 'static) {
        let id = {
            let mut inner = self.inner.borrow_mut();
            inner.next_id += 1;
            inner.next_id
        };
        let registry = Rc::downgrade(&self.inner);
        let task = spawn(async move {
            work.await;
            // Finished: forget the handle. Detach so removing it does not cancel us mid-poll.
            if let Some(registry) = registry.upgrade()
                && let Some(task) = registry.borrow_mut().tasks.remove(&id)
            {
                task.detach();
            }
        });
        self.inner.borrow_mut().tasks.insert(id, task);
    }

    fn cancel_all(&self) {
        let tasks: Vec<_> = self
            .inner
            .borrow_mut()
            .tasks
            .drain()
            .map(|(_, t)| t)
            .collect();
        drop(tasks);
    }
}
