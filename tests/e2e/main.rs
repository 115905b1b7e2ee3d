//! Black-box tests: native loopback clients against guests run by sockbox.
//!
//! Every server binds port 0 and the tests read the actual address from the host's readiness
//! report (the library's `ready()` or the CLI's `ready` line); nothing retries a connection.

mod support;

mod cli;
mod echo;
mod plain;
