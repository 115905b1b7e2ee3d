//! `sockbox build`: a Python guest (`.py`) into a component file, for shipping or for running
//! where componentize-py is not installed. `sockbox run app.py` builds the same way on its own.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use sockbox::CompileCache;
use sockbox::python;

use super::Failure;

#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// The Python guest: a .py file defining `class Run(sockbox_guest.Guest)`. Every Python
    /// file of its directory goes into the component with it.
    script: PathBuf,
    /// Where to write the component (default: NAME.wasm in the current directory).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Build even if the cache holds a component of the same sources, and keep nothing there.
    #[arg(long)]
    no_cache: bool,
}

pub(crate) fn build(args: BuildArgs) -> Result<u8, Failure> {
    if !python::is_python(&args.script) {
        return Err(Failure::usage(anyhow!(
            "{} is not a Python guest (.py); a Rust guest builds with `cargo build --release \
             --target wasm32-wasip2`",
            args.script.display()
        )));
    }
    let cache = if args.no_cache {
        CompileCache::Off
    } else {
        CompileCache::user_default()
    };
    let bytes = python::component(&args.script, cache.dir()).map_err(Failure::usage)?;
    let output = args.output.unwrap_or_else(|| {
        let stem = args.script.file_stem().unwrap_or_default();
        PathBuf::from(stem).with_extension("wasm")
    });
    std::fs::write(&output, &bytes)
        .with_context(|| format!("write {}", output.display()))
        .map_err(Failure::usage)?;
    eprintln!(
        "built {} ({:.1} MB); run it with `sockbox run {} --listen ADDR` (or --udp ADDR)",
        output.display(),
        bytes.len() as f64 / 1e6,
        output.display()
    );
    Ok(0)
}
