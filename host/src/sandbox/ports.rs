//! Which guest holds each shared address of this process.
//!
//! The kernel lets any two `SO_REUSEPORT` sockets of one user share an address, so it cannot
//! tell one guest's instances from another guest. The host keeps that ownership itself: a
//! process-wide table of the shared addresses bound and the guest (port group) holding each.
//! A bind by a sharing guest to an address another group holds, or overlapping one (the same
//! port on the wildcard address), is refused before it reaches the kernel (see `link/bind.rs`).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::types::Transport;

/// A new port group: one guest, all of whose instances may share addresses.
pub(crate) fn new_group() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The shared addresses bound in this process: (transport, address) -> (group, instances
/// holding it).
static CLAIMS: Mutex<Vec<Claim>> = Mutex::new(Vec::new());

struct Claim {
    transport: Transport,
    addr: SocketAddr,
    group: u64,
    holders: usize,
}

/// The same port on the same IP, or on the unspecified address of the same family: two
/// `SO_REUSEPORT` sockets the kernel would let bind both.
pub(crate) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Shared addresses one instance may hold: far more than a server serves on; the bound keeps
/// a guest binding port after port from growing the table without end.
pub(crate) const MAX_CLAIMS: usize = 4096;

/// Why an address could not be claimed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unclaimed {
    /// Another group (this one) holds it or an overlapping address.
    Taken(u64),
    /// The instance holds [`MAX_CLAIMS`] already.
    Full,
}

/// The shared addresses one instance (store) holds; released when it ends.
#[derive(Debug)]
pub(crate) struct PortClaims {
    group: u64,
    held: Vec<(Transport, SocketAddr)>,
}

impl PortClaims {
    pub(crate) fn new(group: u64) -> PortClaims {
        PortClaims {
            group,
            held: Vec::new(),
        }
    }

    /// Claims `addr` for this instance's group. True if this call added the claim (the caller
    /// releases it if the bind fails).
    pub(crate) fn claim(
        &mut self,
        transport: Transport,
        addr: SocketAddr,
    ) -> Result<bool, Unclaimed> {
        if self.held.contains(&(transport, addr)) {
            return Ok(false);
        }
        if self.held.len() >= MAX_CLAIMS {
            return Err(Unclaimed::Full);
        }
        let mut claims = lock_claims();
        if let Some(other) = claims
            .iter()
            .find(|c| c.transport == transport && overlaps(c.addr, addr) && c.group != self.group)
        {
            return Err(Unclaimed::Taken(other.group));
        }
        match claims
            .iter_mut()
            .find(|c| c.transport == transport && c.addr == addr)
        {
            Some(c) => c.holders += 1,
            None => claims.push(Claim {
                transport,
                addr,
                group: self.group,
                holders: 1,
            }),
        }
        self.held.push((transport, addr));
        Ok(true)
    }

    pub(crate) fn release(&mut self, transport: Transport, addr: SocketAddr) {
        self.held.retain(|h| *h != (transport, addr));
        let mut claims = lock_claims();
        if let Some(i) = claims
            .iter()
            .position(|c| c.transport == transport && c.addr == addr && c.group == self.group)
        {
            claims[i].holders -= 1;
            if claims[i].holders == 0 {
                claims.swap_remove(i);
            }
        }
    }
}

impl Drop for PortClaims {
    fn drop(&mut self) {
        for (transport, addr) in std::mem::take(&mut self.held) {
            self.release(transport, addr);
        }
    }
}

fn lock_claims() -> std::sync::MutexGuard<'static, Vec<Claim>> {
    // Each update is one step; a panic elsewhere leaves the table consistent.
    CLAIMS.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_group_shares_its_addresses_and_nobody_else_does() {
        let (a, b) = (new_group(), new_group());
        let mut a0 = PortClaims::new(a);
        let mut a1 = PortClaims::new(a);
        let mut b0 = PortClaims::new(b);
        let addr = sa("127.0.0.1:47001");
        assert_eq!(a0.claim(Transport::Tcp, addr), Ok(true));
        assert_eq!(a0.claim(Transport::Tcp, addr), Ok(false), "held already");
        assert_eq!(a1.claim(Transport::Tcp, addr), Ok(true));
        assert_eq!(b0.claim(Transport::Tcp, addr), Err(Unclaimed::Taken(a)));
        // The wildcard overlaps; the other transport and the other family do not.
        assert_eq!(
            b0.claim(Transport::Tcp, sa("0.0.0.0:47001")),
            Err(Unclaimed::Taken(a))
        );
        assert_eq!(b0.claim(Transport::Udp, addr), Ok(true));
        assert_eq!(b0.claim(Transport::Tcp, sa("[::1]:47001")), Ok(true));
        // Held until every instance of the group let go.
        drop(a0);
        assert_eq!(b0.claim(Transport::Tcp, addr), Err(Unclaimed::Taken(a)));
        a1.release(Transport::Tcp, addr);
        assert_eq!(b0.claim(Transport::Tcp, addr), Ok(true));
        assert_eq!(
            PortClaims::new(a).claim(Transport::Tcp, addr),
            Err(Unclaimed::Taken(b))
        );
    }

    #[test]
    fn an_instance_holds_at_most_max_claims() {
        let mut claims = PortClaims::new(new_group());
        let addr = |i: usize| SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 47002));
        for i in 0..MAX_CLAIMS {
            assert_eq!(claims.claim(Transport::Udp, addr(i)), Ok(true));
        }
        assert_eq!(claims.claim(Transport::Udp, addr(0)), Ok(false));
        assert_eq!(
            claims.claim(Transport::Udp, addr(MAX_CLAIMS)),
            Err(Unclaimed::Full)
        );
        drop(claims);
        assert!(!lock_claims().iter().any(|c| c.addr.port() == 47002));
    }
}
