//! The network policy: what a guest may do with sockets and names, decided in one place.
//!
//! A guest starts with nothing. The user grants uses of addresses (`--listen`, `--udp`,
//! `--allow USE=PATTERN`, or the same in a TOML file) and every socket operation the guest
//! attempts is judged against those grants, first matching rule wins, and reported with the
//! rule as the user wrote it.
//!
//! - `rule`: uses, rules and the pure decision of a policy (`Policy::decide`).
//! - `pattern`: the address and name patterns a rule covers, parsed and matched.
//! - `file`: building a `Policy` from flags and a policy file, and merging the two.
//! - `values`: the syntax of addresses, sizes and durations, and TOML errors with lines.
//! - `gate`: the policy applied to what wasmtime-wasi asks, including implicit binds and
//!   UDP replies.
//! - `udp_state`: one UDP socket's role and the peers it may answer or hear.
//! - `explain`: the answer for one use of one address, as a sentence.
//! - `learn`: the smallest policy for what a guest did under permissive loopback grants.
//!
//! See `docs/policy.md` for the user-facing description.

mod explain;
mod file;
mod gate;
pub mod learn;
mod pattern;
mod rule;
mod udp_state;
mod values;

pub use explain::{Explanation, explain};
pub use file::{Limits, Policy};
pub(crate) use file::{LimitsSection, PolicySection};
pub use gate::{
    DEFAULT_ACCEPT, DEFAULT_UDP_RECV, IMPLICIT_TCP_BIND, IMPLICIT_UDP_BIND, REPLY_RECV, REPLY_SEND,
};
// What the sandbox asks per socket operation; an embedder only sees the decisions.
pub(crate) use gate::{Gate, SocketOp, Verdict};
pub(crate) use pattern::normalise_name;
pub use pattern::{AddrPattern, NamePattern, PortRange};
pub use rule::{Decision, Pattern, Rule, Use};
pub(crate) use rule::{is_implicit_bind_addr, suggest_grant};
pub(crate) use udp_state::{UdpRole, UdpSocketState};
pub(crate) use values::{line_of, toml_error};
pub use values::{parse_millis, parse_size, parse_socket_addr};
