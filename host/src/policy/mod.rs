//! The network policy: what a guest may do with sockets and names, decided in one place.
//!
//! A guest starts with nothing. The user grants uses of addresses (`--listen`, `--udp`,
//! `--allow USE=PATTERN`, or the same in a TOML file) and every socket operation the guest
//! attempts is judged against those grants, first matching rule wins, and reported with the
//! rule as the user wrote it.
//!
//! - `rule`: uses, address and name patterns, pure matching (`Policy::decide`).
//! - `file`: building a `Policy` from flags and a policy file, and merging the two.
//! - `gate`: the policy applied to what wasmtime-wasi asks, including implicit binds and
//!   UDP replies.
//! - `explain`: the answer for one use of one address, as a sentence.
//! - `learn`: the smallest policy for what a guest did under permissive loopback grants.
//!
//! See `docs/policy.md` for the user-facing description.

mod explain;
mod file;
mod gate;
pub mod learn;
mod rule;

pub use explain::{Explanation, explain};
pub use file::{
    Limits, LimitsSection, Policy, PolicySection, parse_millis, parse_size, parse_socket_addr,
};
pub use gate::{
    DEFAULT_ACCEPT, DEFAULT_UDP_RECV, Gate, IMPLICIT_TCP_BIND, IMPLICIT_UDP_BIND, MAX_GUEST_PEERS,
    MAX_PEERS, PEER_IDLE, REPLY_RECV, REPLY_SEND, SocketOp, UdpRole, UdpSocketState, Verdict,
};
pub use rule::{
    AddrPattern, Decision, NamePattern, Pattern, PortRange, Rule, Use, is_implicit_bind_addr,
    normalise_name, suggest_grant,
};
