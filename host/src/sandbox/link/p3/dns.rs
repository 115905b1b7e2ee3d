//! WASI 0.3's `resolve-addresses`, answered by the sandbox as 0.2's name lookup is (see
//! `link/dns.rs`: the same bounds, policy, `[dns-map]`, audit and lookups-in-flight cap); only
//! the shape differs: one async call returns the whole answer.

use anyhow::Result;
use wasmtime::component::{Accessor, Linker};
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode as P2Code;
use wasmtime_wasi::p3::bindings::sockets::ip_name_lookup::ErrorCode;
use wasmtime_wasi::p3::bindings::sockets::types::IpAddress;

use super::NAME_LOOKUP;
use crate::sandbox::state::HostState;

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(NAME_LOOKUP)?.func_wrap_concurrent(
        "resolve-addresses",
        |store: &Accessor<HostState>, (name,): (String,)| {
            Box::pin(async move {
                let lookup = store.with(|mut access| access.data_mut().lookup(&name));
                let answer = match lookup {
                    Ok(lookup) => lookup.answer().await,
                    Err(code) => Err(code),
                };
                let answer = answer
                    .map(|addrs| addrs.into_iter().map(IpAddress::from).collect::<Vec<_>>())
                    .map_err(to_p3);
                Ok((answer,))
            })
        },
    )?;
    Ok(())
}

/// 0.2's lookup errors in 0.3's terms.
fn to_p3(code: P2Code) -> ErrorCode {
    match code {
        P2Code::AccessDenied => ErrorCode::AccessDenied,
        P2Code::InvalidArgument => ErrorCode::InvalidArgument,
        P2Code::NameUnresolvable => ErrorCode::NameUnresolvable,
        P2Code::TemporaryResolverFailure => ErrorCode::TemporaryResolverFailure,
        P2Code::PermanentResolverFailure => ErrorCode::PermanentResolverFailure,
        _ => ErrorCode::Other(None),
    }
}
