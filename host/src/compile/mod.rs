//! One wasmtime engine per process, and the compiled components it runs: the leaf under the
//! guest resolver ([`crate::guest`]) and the sandbox, which both use it and which it uses
//! neither of (nor Python: `python` stores its builds in [`cache`] too).
//!
//! Compiling a component is the slow part of starting a guest. A process that starts the same
//! guest again (tests, `sockbox up` restarts, `--instances`) compiles it once, and with a
//! [`CompileCache`] a later process loads it from disk instead.

pub(crate) mod cache;
mod key;
mod private_fs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, ProfilingStrategy};

pub use cache::CompileCache;
use cache::Origin;

pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // WASI 0.3 guests: streams, futures and waitable sets. 0.2 guests never use them.
        config.wasm_component_model_async(true);
        // The epoch is advanced by the sandbox's busy watch (`sandbox/busy.rs`).
        config.epoch_interruption(true);
        // `SOCKBOX_PROFILE=perfmap`: guest functions named for `perf` in /tmp/perf-PID.map.
        if std::env::var_os("SOCKBOX_PROFILE").is_some_and(|v| v == "perfmap") {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        Engine::new(&config).expect("a valid wasmtime configuration")
    })
}

/// Compiles `bytes` once per `key` for the life of the process, through `disk` when it is on.
/// `describe` names the component in errors (a path or a built-in's name, never the key).
pub(crate) fn component(
    key: &str,
    bytes: &[u8],
    disk: &CompileCache,
    describe: &str,
) -> Result<Component> {
    // One slot per key, locked while it is filled: a second start of the same guest waits for
    // the first compile (seconds for a Python guest) instead of doing it again.
    type Slot = Arc<Mutex<Option<Component>>>;
    static MEMORY: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let slot = MEMORY
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key.to_string())
        .or_default()
        .clone();
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(component) = &*slot {
        return Ok(component.clone());
    }
    let started = Instant::now();
    let compile = || {
        Component::new(engine(), bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{describe} is not a valid WebAssembly component"))
    };
    let (component, origin) = match disk {
        CompileCache::Off => (compile()?, Origin::Compiled),
        CompileCache::Dir(dir) => cache::load_or_compile(dir, engine(), bytes, compile)?,
    };
    tracing::debug!(?origin, elapsed = ?started.elapsed(), "component {describe} loaded");
    Ok(slot.insert(component).clone())
}
