//! Accept loops that serve many clients at once and stop cleanly when the host says so.
//!
//! Every connection runs as its own task on the single-threaded reactor (socketserver's
//! `ThreadingMixIn`, without threads). On shutdown the loop stops accepting and cancels the
//! connection tasks while the reactor is still running, so their sockets are dropped in order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::future;
use wstd::runtime::{Task, spawn};

use crate::control;
use crate::net::{TcpListener, TcpStream, UdpSocket};

/// Binds every address the host granted with `--listen`. Fails if there is none.
pub async fn listen_granted() -> io::Result<Vec<TcpListener>> {
    let addrs = control::listen_addresses();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no TCP listen address granted (run with --listen ADDR)",
        ));
    }
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
        listeners.push(listener);
    }
    Ok(listeners)
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
    // Cancel accept loops first (no new connections), then every live connection.
    drop(loops);
    connections.cancel_all();
    Ok(())
}

/// Runs `until_shutdown` and returns when it ends or the host asks to stop, whichever is first.
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
