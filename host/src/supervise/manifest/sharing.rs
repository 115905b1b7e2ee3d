//! The one check across guests of a manifest: no two guests may serve on the same address,
//! by a listen/udp grant or by a range they may bind in (a port group with instances would
//! silently mix their clients).

use std::net::SocketAddr;

use anyhow::{Result, bail};

use super::GuestSpec;
use crate::policy::{AddrPattern, Use};
use crate::sandbox::{Transport, overlaps};

/// Two guests cannot serve on one address: the second would fail to bind, or with several
/// instances silently share the first one's clients.
pub(super) fn check_no_shared_address(guests: &[GuestSpec]) -> Result<()> {
    let mut taken: Vec<(Transport, SocketAddr, &str)> = Vec::new();
    for guest in guests {
        for (i, (transport, addr)) in guest.addresses().enumerate() {
            // Port 0 asks for a fresh port each time; it never collides.
            if addr.port() == 0 {
                continue;
            }
            if let Some((_, _, other)) = taken
                .iter()
                .find(|(t, a, other)| *t == transport && overlaps(*a, addr) && *other != guest.name)
            {
                let line = guest.address_lines.get(i).unwrap_or(&guest.at);
                bail!(
                    "{line}: guest `{}` wants {transport} {addr}, which guest `{other}` already \
                     has; give each guest its own address (or port 0)",
                    guest.name
                );
            }
            taken.push((transport, addr, &guest.name));
        }
    }
    // A range another guest may bind in (`allow tcp-listen=`/`udp-bind=`) takes an address
    // as surely: with instances it could join this guest's port group, without them take the
    // port while this guest restarts.
    for guest in guests {
        for (transport, addr) in guest.addresses().filter(|(_, a)| a.port() != 0) {
            let use_ = match transport {
                Transport::Tcp => Use::TcpListen,
                Transport::Udp => Use::UdpBind,
            };
            for other in guests.iter().filter(|g| g.name != guest.name) {
                let covering = other
                    .policy
                    .rules_for(use_)
                    .find(|r| r.addr_pattern().is_some_and(|p| covers(p, addr)));
                if let Some(rule) = covering {
                    bail!(
                        "{}: guest `{}` may bind {transport} {addr} by {}, but guest `{}` has it; \
                         give each guest its own addresses",
                        other.at,
                        other.name,
                        rule.source,
                        guest.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// Whether a socket bound as `pattern` allows could share `addr` (see [`overlaps`]).
fn covers(pattern: &AddrPattern, addr: SocketAddr) -> bool {
    let net = pattern.net().addr();
    pattern.ports().contains(addr.port())
        && net.is_ipv4() == addr.ip().to_canonical().is_ipv4()
        && (pattern.matches_ip(addr.ip()) || addr.ip().is_unspecified() || net.is_unspecified())
}
