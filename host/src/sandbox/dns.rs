//! `wasi:sockets/ip-name-lookup`, answered by the sandbox.
//!
//! wasmtime-wasi can only switch name lookup on or off; sockbox needs it per name. This module
//! replaces the interface: each name is judged by the policy's `dns` rules and recorded, then
//! answered from the policy's `[dns-map]` (hermetic: the system resolver is never asked for a
//! mapped name) or else by the system resolver. An answer grants nothing: connecting to it is
//! checked like any other address.

use std::collections::VecDeque;
use std::net::IpAddr;

use anyhow::Result;
use futures::FutureExt;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::Pollable;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi_io::poll::{DynPollable, subscribe};

use super::state::HostState;
use crate::audit::AuditEvent;
use crate::policy::Use;

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

/// Replaces wasmtime-wasi's name lookup. Must run after wasmtime-wasi's `add_to_linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    linker.allow_shadowing(true);
    ip_name_lookup::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One lookup in progress or answered: the guest's `resolve-address-stream`.
pub struct NameLookup(Answer);

enum Answer {
    Pending(tokio::task::JoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
    Ready(VecDeque<IpAddr>),
    Failed(ErrorCode),
}

impl NameLookup {
    fn settle(&mut self, result: Result<Result<Vec<IpAddr>, ErrorCode>, tokio::task::JoinError>) {
        self.0 = match result {
            Ok(Ok(addrs)) => Answer::Ready(addrs.into()),
            Ok(Err(code)) => Answer::Failed(code),
            Err(_) => Answer::Failed(ErrorCode::PermanentResolverFailure),
        };
    }
}

#[async_trait::async_trait]
impl Pollable for NameLookup {
    async fn ready(&mut self) {
        if let Answer::Pending(task) = &mut self.0 {
            let result = task.await;
            self.settle(result);
        }
    }
}

impl Drop for NameLookup {
    fn drop(&mut self) {
        if let Answer::Pending(task) = &self.0 {
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
        let answer = self.lookup(&name);
        Ok(Ok(self.table.push(NameLookup(answer))?))
    }
}

impl HostState {
    fn lookup(&mut self, name: &str) -> Answer {
        // An address literal needs no resolver and reveals nothing.
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Answer::Ready(VecDeque::from([ip]));
        }
        let decision = self.gate.check_name(name);
        self.shared.record_event(AuditEvent::new(
            &self.shared.guest,
            Use::Dns,
            name,
            decision.allowed,
            decision.rule,
        ));
        if !decision.allowed {
            return Answer::Failed(ErrorCode::AccessDenied);
        }
        if let Some(addrs) = self.gate.policy().mapped_addrs(name) {
            return Answer::Ready(addrs.iter().copied().collect());
        }
        let name = name.to_string();
        Answer::Pending(tokio::spawn(async move {
            match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.dedup();
                    Ok(ips)
                }
                Err(_) => Err(ErrorCode::NameUnresolvable),
            }
        }))
    }
}

impl ip_name_lookup::HostResolveAddressStream for HostState {
    fn resolve_next_address(
        &mut self,
        lookup: Resource<NameLookup>,
    ) -> wasmtime::Result<Result<Option<IpAddress>, ErrorCode>> {
        let lookup = self.table.get_mut(&lookup)?;
        if let Answer::Pending(task) = &mut lookup.0 {
            match task.now_or_never() {
                Some(result) => lookup.settle(result),
                None => return Ok(Err(ErrorCode::WouldBlock)),
            }
        }
        Ok(match &mut lookup.0 {
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
