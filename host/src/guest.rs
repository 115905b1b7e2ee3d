//! The guest source resolver: a reference (a built-in name, a `.wasm` component, a `.py`
//! guest, or bytes) becomes a loaded, compiled [`Guest`] once.
//!
//! Everything that starts guests (`sockbox run` with its instances, `sockbox up` with its
//! restarts, `check`, `learn`, embedders) resolves here and hands the [`Guest`] to the sandbox,
//! which never sees Python, files or built-in names. A `Guest` is cheap to clone: every
//! instance and every restart starts from the same compiled component, so componentize-py,
//! the folder hash and the compile run once per reference, not once per start.
//!
//! Layering, with no circle: `sandbox` → `guest` → (`python`, `builtin`) → `compile` (the
//! engine and the on-disk cache, a leaf).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use wasmtime::component::Component;

use crate::compile::{self, CompileCache};

/// Where a guest's component comes from: a reference, not yet loaded.
#[derive(Clone, Debug)]
pub enum GuestSource {
    /// A built-in guest by name (`echo`, `time`, ...).
    Builtin(String),
    /// A component file.
    File(PathBuf),
    /// Component bytes, with the name used in logs and audit lines.
    Bytes {
        /// The name logs and audit lines use.
        name: String,
        /// The component.
        bytes: Arc<[u8]>,
    },
}

impl GuestSource {
    /// A built-in name, or else a path (anything ending in `.wasm` or `.py`, or containing a
    /// `/`). A `.py` file is a Python guest, built with componentize-py before it runs.
    pub fn parse(spec: &str) -> GuestSource {
        if crate::builtin::get(spec).is_some()
            || !(spec.ends_with(".wasm")
                || spec.ends_with(".py")
                || spec.contains(std::path::MAIN_SEPARATOR))
        {
            GuestSource::Builtin(spec.to_string())
        } else {
            GuestSource::File(PathBuf::from(spec))
        }
    }

    /// The name shown in logs and audit lines: the built-in name or the file stem.
    pub fn name(&self) -> String {
        match self {
            GuestSource::Builtin(name) => name.clone(),
            GuestSource::File(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            GuestSource::Bytes { name, .. } => name.clone(),
        }
    }

    /// Resolves the reference (see [`resolve`]) without the on-disk cache.
    pub fn compile(&self) -> Result<Component> {
        self.compile_with(&CompileCache::Off)
    }

    /// Resolves the reference through `cache` (see [`resolve`]) and returns its component.
    pub fn compile_with(&self, cache: &CompileCache) -> Result<Component> {
        resolve(self, cache).map(|guest| guest.component().clone())
    }
}

impl From<&str> for GuestSource {
    fn from(spec: &str) -> Self {
        GuestSource::parse(spec)
    }
}

impl From<&Path> for GuestSource {
    fn from(path: &Path) -> Self {
        GuestSource::File(path.to_path_buf())
    }
}

impl From<PathBuf> for GuestSource {
    fn from(path: PathBuf) -> Self {
        GuestSource::File(path)
    }
}

/// A loaded, compiled guest, ready to be instantiated any number of times. Clones share it.
#[derive(Clone)]
pub struct Guest {
    inner: Arc<Inner>,
}

struct Inner {
    source: GuestSource,
    name: String,
    component: Component,
}

impl Guest {
    /// Resolves `source` through `cache`: the same as [`resolve`].
    pub fn resolve(source: &GuestSource, cache: &CompileCache) -> Result<Guest> {
        resolve(source, cache)
    }

    /// The name used in logs and audit lines (the built-in name or file stem).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The reference it was resolved from.
    pub fn source(&self) -> &GuestSource {
        &self.inner.source
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        &self.inner.component
    }

    /// The same resolution (not merely an equal one).
    #[cfg(test)]
    pub(crate) fn is(&self, other: &Guest) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("name", &self.inner.name)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

/// Loads and compiles the guest `source` names: a Python guest is built (or taken from
/// `cache`), a file read and its shape checked, then the component compiled once per process
/// and content (loaded from `cache` when a sound entry is there, and written there otherwise).
/// Errors are load errors, each written here once.
pub fn resolve(source: &GuestSource, cache: &CompileCache) -> Result<Guest> {
    let component = match source {
        GuestSource::Builtin(name) => {
            let bytes = crate::builtin::get(name).ok_or_else(|| unknown_builtin(name))?;
            let describe = format!("the built-in guest `{name}`");
            compile::component(&format!("builtin:{name}"), bytes, cache, &describe)?
        }
        GuestSource::File(path) if crate::python::is_python(path) => {
            let bytes = crate::python::component(path, cache.dir())?;
            let key = format!("python:{}:{}", path.display(), digest(&bytes));
            compile::component(&key, &bytes, cache, &path.display().to_string())?
        }
        GuestSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|err| {
                let hint = if err.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        " (give the path of a .wasm component, or a built-in name: {})",
                        builtin_names()
                    )
                } else {
                    String::new()
                };
                anyhow!("cannot read the component {}: {err}{hint}", path.display())
            })?;
            check_shape(&bytes, &path.display().to_string())?;
            let key = format!("file:{}:{}", path.display(), digest(&bytes));
            compile::component(&key, &bytes, cache, &path.display().to_string())?
        }
        GuestSource::Bytes { name, bytes } => {
            let describe = format!("guest `{name}`");
            check_shape(bytes, &describe)?;
            let key = format!("bytes:{name}:{}", digest(bytes));
            compile::component(&key, bytes, cache, &describe)?
        }
    };
    Ok(Guest {
        inner: Arc::new(Inner {
            name: source.name(),
            source: source.clone(),
            component,
        }),
    })
}

/// The one "no such built-in" error (`sockbox run nope`, a manifest's `component = "nope"`).
pub(crate) fn unknown_builtin(name: &str) -> anyhow::Error {
    anyhow!(
        "no built-in guest named `{name}` (built-ins: {}; or give a path to a .wasm component or \
         a .py guest)",
        builtin_names()
    )
}

fn builtin_names() -> String {
    crate::builtin::names().collect::<Vec<_>>().join(", ")
}

/// Says what a file that is not a component is, and what to do, before the compiler's own
/// message (which speaks of parsers, not of the user's next step).
fn check_shape(bytes: &[u8], describe: &str) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    if bytes.starts_with(MAGIC) {
        if bytes.get(4..8) == Some(&CORE_MODULE[..]) {
            bail!(
                "{describe} is a core WebAssembly module, not a component: build the guest for \
                 wasm32-wasip2 (`cargo build --release --target wasm32-wasip2`), or turn a \
                 wasm32-wasip1 module into a component with `wasm-tools component new MODULE \
                 --adapt wasi_snapshot_preview1.command.wasm -o COMPONENT.wasm`"
            );
        }
        return Ok(());
    }
    // The text format is accepted too (tests and hand-written components use it).
    let text = std::str::from_utf8(bytes).map(str::trim_start);
    if text.is_ok_and(|t| t.starts_with('(') || t.starts_with(";;")) {
        return Ok(());
    }
    bail!(
        "{describe} is not a WebAssembly component (it does not start with the wasm magic \
         bytes): build one with `cargo build --release --target wasm32-wasip2`, or give a \
         built-in guest's name"
    )
}

/// A cheap content key so an edited file is recompiled.
fn digest(bytes: &[u8]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{}:{:016x}", bytes.len(), hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_resolves_once_and_its_clones_share_the_component() {
        let guest = resolve(&GuestSource::parse("echo"), &CompileCache::Off).unwrap();
        assert_eq!(guest.name(), "echo");
        assert!(guest.is(&guest.clone()));
    }

    #[test]
    fn an_unknown_built_in_is_named_with_the_known_ones() {
        let err = resolve(&GuestSource::parse("nope"), &CompileCache::Off).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("no built-in guest named `nope` (built-ins: "),
            "{text}"
        );
        assert!(text.contains("echo"), "{text}");
    }
}
