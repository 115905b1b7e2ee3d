//! The conversation state of each UDP socket and datagram stream of one guest, by handle.
//!
//! States are held weakly here and strongly by the socket's address check (see
//! `link/udp.rs`), so a state lives exactly as long as its socket (and streams) and handle
//! numbers reused later start afresh.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::policy::{UdpRole, UdpSocketState};

/// Handles forgotten this often (in insertions) if their socket is gone.
const SWEEP_EVERY: usize = 256;

/// The conversation state of each UDP socket and datagram stream of one guest, by handle.
#[derive(Default)]
pub(crate) struct UdpSockets {
    sockets: HashMap<u32, Weak<UdpSocketState>>,
    streams: HashMap<u32, Weak<UdpSocketState>>,
    inserted: usize,
}

impl UdpSockets {
    /// Whether the socket was bound to serve (a `udp-bind` grant), so its readiness counts.
    /// A socket bound only to send is not a server and is never announced.
    pub(crate) fn serves(&self, socket: u32) -> bool {
        (self.sockets.get(&socket).and_then(Weak::upgrade))
            .is_some_and(|s| s.role() == UdpRole::Server)
    }

    /// The state of the socket a datagram stream reads from.
    pub(crate) fn stream(&self, stream: u32) -> Option<Arc<UdpSocketState>> {
        self.streams.get(&stream).and_then(Weak::upgrade)
    }

    pub(crate) fn insert_socket(&mut self, rep: u32, state: &Arc<UdpSocketState>) {
        self.sweep();
        self.sockets.insert(rep, Arc::downgrade(state));
    }

    pub(crate) fn insert_stream(&mut self, rep: u32, socket: u32) {
        self.sweep();
        let state = self.sockets.get(&socket).cloned().unwrap_or_default();
        self.streams.insert(rep, state);
    }

    /// Drops the entries of sockets that are gone, now and then, so the maps stay as small
    /// as the guest's live sockets.
    fn sweep(&mut self) {
        self.inserted += 1;
        if self.inserted.is_multiple_of(SWEEP_EVERY) {
            self.sockets.retain(|_, s| s.strong_count() > 0);
            self.streams.retain(|_, s| s.strong_count() > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_reads_with_its_socket_s_state_for_as_long_as_the_socket_lives() {
        let mut udp = UdpSockets::default();
        let state = Arc::new(UdpSocketState::default());
        udp.insert_socket(1, &state);
        udp.insert_stream(10, 1);
        udp.insert_stream(11, 7);
        assert!(Arc::ptr_eq(&udp.stream(10).unwrap(), &state));
        assert!(
            udp.stream(11).is_none(),
            "a stream of an unknown socket hears nobody"
        );
        assert!(!udp.serves(1), "an unbound socket is no server");
        drop(state);
        assert!(udp.stream(10).is_none(), "the state went with its socket");
        // Entries of gone sockets are swept out as new ones come.
        let live = Arc::new(UdpSocketState::default());
        for rep in 100..100 + SWEEP_EVERY as u32 {
            udp.insert_socket(rep, &live);
        }
        assert!(!udp.sockets.contains_key(&1) && !udp.streams.contains_key(&10));
        assert_eq!(udp.sockets.len(), SWEEP_EVERY);
    }
}
