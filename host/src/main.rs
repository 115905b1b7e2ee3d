//! The `sockbox` command line; see `sockbox --help` and docs/contract.md.

use std::process::ExitCode;

// wasi:io `poll` allocates a future and an index list per pollable on every call; under many
// clients glibc's malloc and free were a third of the host's time (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // With RUST_BACKTRACE set, every error value (each client reset a guest reads about)
    // captures the host's stack, which sockbox never shows outside SOCKBOX_LOG=debug: turn
    // that capture off for errors; panics keep their backtraces (RUST_BACKTRACE governs them).
    let debug =
        std::env::var("SOCKBOX_LOG").is_ok_and(|f| f.contains("debug") || f.contains("trace"));
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() && !debug {
        // SAFETY: the first thing main does; no other thread exists yet to read the environment.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    sockbox_cli::main()
}

#[path = "cli/mod.rs"]
mod sockbox_cli;
