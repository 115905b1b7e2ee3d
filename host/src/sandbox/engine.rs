//! One wasmtime engine per process, and a cache of compiled components.
//!
//! Compiling a component is the slow part of starting a guest; a process that starts the
//! same guest again (tests, `sockbox up` restarts) compiles it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the epoch advances. A guest that computes without calling the host yields to
/// the async runtime at every epoch, so one busy guest cannot starve the host's other work.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("a valid wasmtime configuration");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("sockbox-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawn the epoch thread");
        engine
    })
}

/// Compiles `bytes` once per `key` for the life of the process.
pub(crate) fn component(key: &str, bytes: &[u8]) -> Result<Component> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<OnceLock<Component>>>>> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key.to_string())
        .or_default()
        .clone();
    if let Some(component) = slot.get() {
        return Ok(component.clone());
    }
    let component = Component::new(engine(), bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("`{key}` is not a valid WebAssembly component"))?;
    Ok(slot.get_or_init(|| component).clone())
}
