//! `wasi:sockets/ip-name-lookup`, answered by the sandbox.
//!
//! wasmtime-wasi can only switch name lookup on or off; sockbox needs it per name. This module
//! replaces the interface: each name is judged by the policy's `dns` rules and recorded, then
//! answered from the policy's `[dns-map]` (hermetic: the system resolver is never asked for a
//! mapped name) or else by the system resolver. An answer grants nothing: connecting to it is
//! checked like any other address.
//!
//! Bounds: a name that is not a DNS name (over 253 bytes, a label over 63, characters other
//! than letters, digits, `-` and `_`) is refused with `invalid-argument` before the policy is
//! asked, so nothing is recorded or logged for it. A guest has at most
//! [`MAX_LOOKUPS`] lookups that go to the system resolver open at once: one counts from
//! `resolve-addresses` until the guest has dropped it *and* the resolver's call has returned
//! (`getaddrinfo` cannot be cancelled, so a dropped lookup keeps its blocking thread, and its
//! slot, until the call ends; the resolver's own timeouts bound that). Past the cap
//! `resolve-addresses` fails at once with `temporary-resolver-failure` (what `getaddrinfo`
//! reports as `EAI_AGAIN`: try again later), so the blocking pool never holds more than
//! `MAX_LOOKUPS` calls per guest. Address literals, mapped and denied names need no slot.

use std::collections::VecDeque;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::Result;
use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::Pollable;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi_io::poll::{DynPollable, subscribe};

use crate::audit::{AuditEvent, LIMIT_PREFIX};
use crate::policy::{Use, normalise_name};
use crate::sandbox::limits::MAX_LOOKUPS;
use crate::sandbox::state::HostState;

/// The longest name a guest may ask for: 253 bytes, and one trailing dot.
const MAX_NAME: usize = 254;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:sockets/imports@0.2.12",
        imports: { default: trappable },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
            "wasi:sockets/instance-network": wasmtime_wasi::p2::bindings::sockets::instance_network,
            "wasi:sockets/tcp": wasmtime_wasi::p2::bindings::sockets::tcp,
            "wasi:sockets/tcp-create-socket": wasmtime_wasi::p2::bindings::sockets::tcp_create_socket,
            "wasi:sockets/udp": wasmtime_wasi::p2::bindings::sockets::udp,
            "wasi:sockets/udp-create-socket": wasmtime_wasi::p2::bindings::sockets::udp_create_socket,
            "wasi:sockets/ip-name-lookup.resolve-address-stream": super::NameLookup,
        },
    });
}

use bindings::wasi::sockets::ip_name_lookup;

/// Replaces wasmtime-wasi's name lookup.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    ip_name_lookup::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    Ok(())
}

/// One lookup in progress or answered: the guest's `resolve-address-stream`. It holds its
/// slot of the guest's [`MAX_LOOKUPS`] (if it went to the resolver) until dropped.
pub struct NameLookup {
    answer: Answer,
    _slot: Option<Arc<OwnedSemaphorePermit>>,
}

impl NameLookup {
    fn answered(answer: Answer) -> NameLookup {
        NameLookup {
            answer,
            _slot: None,
        }
    }
}

enum Answer {
    Pending(tokio::task::JoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
    Ready(VecDeque<IpAddr>),
    Failed(ErrorCode),
}

impl NameLookup {
    fn settle(&mut self, result: Result<Result<Vec<IpAddr>, ErrorCode>, tokio::task::JoinError>) {
        self.answer = match result {
            Ok(Ok(addrs)) => Answer::Ready(addrs.into()),
            Ok(Err(code)) => Answer::Failed(code),
            Err(_) => Answer::Failed(ErrorCode::PermanentResolverFailure),
        };
    }
}

impl NameLookup {
    /// The whole answer, once the resolver has given it; the slot is held until then.
    pub(super) async fn answer(mut self) -> Result<Vec<IpAddr>, ErrorCode> {
        self.ready().await;
        match std::mem::replace(&mut self.answer, Answer::Failed(ErrorCode::Unknown)) {
            Answer::Ready(addrs) => Ok(addrs.into()),
            Answer::Failed(code) => Err(code),
            Answer::Pending(_) => unreachable!("settled by ready"),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for NameLookup {
    async fn ready(&mut self) {
        if let Answer::Pending(task) = &mut self.answer {
            let result = task.await;
            self.settle(result);
        }
    }
}

impl Drop for NameLookup {
    fn drop(&mut self) {
        if let Answer::Pending(task) = &self.answer {
            task.abort();
        }
    }
}

impl ip_name_lookup::Host for HostState {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> wasmtime::Result<Result<Resource<NameLookup>, ErrorCode>> {
        // The network handle is the capability to use this function; it must be valid.
        self.table.get(&network)?;
        let lookup = match self.lookup(&name) {
            Ok(lookup) => lookup,
            Err(code) => return Ok(Err(code)),
        };
        Ok(Ok(self.table.push(lookup)?))
    }
}

impl HostState {
    /// Judges, records and starts one lookup (both worlds: see `p3/dns.rs`).
    pub(super) fn lookup(&mut self, name: &str) -> Result<NameLookup, ErrorCode> {
        // Checked before anything copies, records or logs the name: a guest's string can be
        // as long as its memory.
        if name.len() > MAX_NAME {
            return Err(ErrorCode::InvalidArgument);
        }
        // An address literal needs no resolver and reveals nothing.
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(NameLookup::answered(Answer::Ready(VecDeque::from([ip]))));
        }
        // The policy's own notion of a name (folded: lowercase, no trailing dot), so a name
        // with control characters or spaces never reaches the gate, the logs or the resolver.
        let Ok(name) = normalise_name(name) else {
            tracing::debug!(guest = %self.shared.guest, "refused a lookup of a malformed name");
            return Err(ErrorCode::InvalidArgument);
        };
        let decision = self.gate.check_name(&name);
        let record = |state: &HostState, allowed: bool, rule: Option<String>| {
            let event = AuditEvent::new(&state.shared.guest, Use::Dns, &name, allowed, rule);
            state.shared.record_event(event);
        };
        if !decision.allowed {
            record(self, false, decision.rule);
            return Ok(NameLookup::answered(Answer::Failed(
                ErrorCode::AccessDenied,
            )));
        }
        if let Some(addrs) = self.gate.policy().mapped_addrs(&name) {
            record(self, true, decision.rule);
            return Ok(NameLookup::answered(Answer::Ready(
                addrs.iter().copied().collect(),
            )));
        }
        let Ok(permit) = self.lookups.clone().try_acquire_owned() else {
            let limit = format!("{LIMIT_PREFIX}{MAX_LOOKUPS} name lookups in flight");
            record(self, false, Some(limit));
            return Err(ErrorCode::TemporaryResolverFailure);
        };
        record(self, true, decision.rule);
        let permit = Arc::new(permit);
        let held = permit.clone();
        // A blocking thread of our own rather than `tokio::net::lookup_host`, so the slot is
        // given back exactly when `getaddrinfo` returns, whether the guest waited or not.
        let task = tokio::task::spawn_blocking(move || {
            let _held = held;
            match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.dedup();
                    Ok(ips)
                }
                Err(_) => Err(ErrorCode::NameUnresolvable),
            }
        });
        Ok(NameLookup {
            answer: Answer::Pending(task),
            _slot: Some(permit),
        })
    }
}

impl ip_name_lookup::HostResolveAddressStream for HostState {
    fn resolve_next_address(
        &mut self,
        lookup: Resource<NameLookup>,
    ) -> wasmtime::Result<Result<Option<IpAddress>, ErrorCode>> {
        let lookup = self.table.get_mut(&lookup)?;
        if let Answer::Pending(task) = &mut lookup.answer {
            match task.now_or_never() {
                Some(result) => lookup.settle(result),
                None => return Ok(Err(ErrorCode::WouldBlock)),
            }
        }
        Ok(match &mut lookup.answer {
            Answer::Ready(addrs) => Ok(addrs.pop_front().map(IpAddress::from)),
            Answer::Failed(code) => Err(*code),
            Answer::Pending(_) => unreachable!("settled above"),
        })
    }

    fn subscribe(
        &mut self,
        lookup: Resource<NameLookup>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(&mut self.table, lookup)
    }

    fn drop(&mut self, lookup: Resource<NameLookup>) -> wasmtime::Result<()> {
        self.table.delete(lookup)?;
        Ok(())
    }
}
