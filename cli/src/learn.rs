//! `sockbox learn`: run a guest under permissive loopback-only grants, record what it does,
//! and print the smallest policy that allows exactly that.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::Failure;
use super::run::{ReadyLines, StopSignals, compile_cache, exit_status, supervise};
use sockbox::policy::learn::{minimal_policy, permissive_loopback};
use sockbox::{GuestSource, Policy, Sandbox};

#[derive(Args, Debug)]
pub(crate) struct LearnArgs {
    /// A built-in guest, a .wasm component, or a Python guest (.py).
    guest: String,
    /// Tell the guest to listen on ADDR (loopback only while learning; repeatable).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Tell the guest to bind UDP on ADDR (loopback only while learning; repeatable).
    #[arg(long, value_name = "ADDR")]
    udp: Vec<String>,
    /// Write the policy to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Arguments passed to the guest.
    #[arg(last = true, value_name = "GUEST_ARGS")]
    guest_args: Vec<String>,
}

pub(crate) async fn learn(args: LearnArgs) -> Result<u8, Failure> {
    let flags = Policy::from_flags(&args.listen, &args.udp, &[]).map_err(Failure::usage)?;
    if let Some(addr) = flags
        .listen
        .iter()
        .chain(&flags.udp)
        .find(|a| !a.ip().is_loopback())
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "learn grants loopback addresses only; {addr} is not one"
        )));
    }
    // The guest is told its addresses, but the grants are the permissive ones.
    let mut policy = permissive_loopback();
    policy.listen = flags.listen.clone();
    policy.udp = flags.udp.clone();

    let mut signals = StopSignals::install().map_err(Failure::usage)?;
    let mut guest = Sandbox::builder(GuestSource::parse(&args.guest))
        .policy(policy)
        .args(args.guest_args.iter().cloned())
        .compile_cache(compile_cache(false))
        // stdout carries only the policy, so `learn g > policy.toml` loads.
        .stdout_to_stderr(true)
        .print_denials(true)
        .start()
        .await
        .map_err(Failure::usage)?;
    eprintln!(
        "sockbox: learning; stop the guest with Ctrl-C (SIGINT) or SIGTERM to get the policy"
    );
    let exit = supervise(&mut guest, &mut signals, ReadyLines::Stderr).await;
    let learned = minimal_policy(&guest.decisions(), &flags.listen, &flags.udp);
    match &args.out {
        Some(path) => {
            std::fs::write(path, learned.to_string())
                .with_context(|| format!("cannot write the policy to {}", path.display()))
                .map_err(|error| Failure { status: 1, error })?;
            eprintln!("sockbox: policy written to {}", path.display());
        }
        None => print!("{learned}"),
    }
    Ok(exit_status(&guest, exit, false))
}
