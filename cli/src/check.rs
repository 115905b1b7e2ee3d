//! `sockbox check`: what a component imports and exports, whether it fits the sandbox's
//! world, and which network uses it could attempt — without running it.

use clap::Args;

use super::Failure;
use sockbox::GuestSource;
use sockbox::sandbox::inspect;

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// A built-in guest, a .wasm component, or a Python guest (.py).
    guest: String,
}

pub(crate) fn check(args: CheckArgs) -> Result<u8, Failure> {
    let inspection = inspect(&GuestSource::parse(&args.guest)).map_err(Failure::usage)?;
    print!("{inspection}");
    // Not conforming is a load error: `sockbox run` would refuse it.
    Ok(if inspection.conforms() { 0 } else { 2 })
}
