//! The `sockbox` command line; see `sockbox --help` and docs/contract.md.

use std::process::ExitCode;

// wasi:io `poll` allocates a future and an index list per pollable on every call; under many
// clients glibc's malloc and free were a third of the host's time (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sockbox_cli::main()
}

#[path = "cli/mod.rs"]
mod sockbox_cli;
