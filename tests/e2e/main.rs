//! Black-box tests: native loopback clients against guests run by sockbox.
//!
//! Every server binds port 0 and the tests read the actual address from the host's readiness
//! report (the library's `ready()` or the CLI's `ready` line); nothing retries a connection.

mod support;

mod bench;
mod cache;
mod chat;
mod ci_example;
mod cli;
mod commands;
mod contract;
mod deploy;
mod echo;
mod escape;
mod framing;
mod hostile_clients;
mod instances;
mod limits;
mod load;
mod p3_guests;
mod plain;
mod policy_cli;
mod proxy;
mod python;
mod rcmd;
mod resolver;
mod scaffold;
mod sdk_io;
mod security_cache;
mod security_diff;
mod security_limits;
mod security_logs;
mod security_udp;
mod soak;
mod time;
mod udp_echo;
mod up;
mod venv;
