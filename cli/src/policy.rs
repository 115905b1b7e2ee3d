//! `sockbox policy explain`: would this policy allow this use of this address, and by which
//! rule? Offline: nothing runs.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Failure;
use sockbox::Policy;
use sockbox::policy::{Use, explain};

#[derive(Args, Debug)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Explain the decision for one use of one address or name.
    /// Exit status: 0 allowed, 1 denied, 2 bad policy or arguments.
    Explain {
        /// The TOML policy file.
        policy: PathBuf,
        /// tcp-listen, tcp-accept, tcp-connect, udp-bind, udp-send, udp-recv or dns.
        #[arg(value_name = "USE")]
        use_: String,
        /// `ip:port` (`[::1]:7000` for IPv6), or a name for dns.
        target: String,
    },
}

pub(crate) fn policy(args: PolicyArgs) -> Result<u8, Failure> {
    match args.command {
        PolicyCommand::Explain {
            policy,
            use_,
            target,
        } => {
            let policy = Policy::load(&policy).map_err(Failure::usage)?;
            let use_: Use = use_.parse().map_err(Failure::usage)?;
            let explanation = explain(&policy, use_, &target).map_err(Failure::usage)?;
            println!("{explanation}");
            Ok(if explanation.allowed { 0 } else { 1 })
        }
    }
}
