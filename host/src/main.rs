//! The `sockbox` command line; see `sockbox --help` and CONTRACT.md.

use std::process::ExitCode;

fn main() -> ExitCode {
    sockbox_cli::main()
}

#[path = "cli/mod.rs"]
mod sockbox_cli;
