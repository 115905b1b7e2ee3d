//! Python guests: `sockbox run app.py` builds `app.py` into a component with componentize-py,
//! against the world and the `sockbox_guest` support package embedded in this binary, and
//! keeps the result in the cache, keyed by everything that went into it.
//!
//! componentize-py is not a Rust crate: sockbox finds it (`SOCKBOX_COMPONENTIZE_PY`, else
//! `componentize-py` on `PATH`) and says how to install the tested version when it is missing.
//!
//! Here: what a Python guest is and its cache key; `sources` reads the guest's files;
//! `componentize` runs the tool on a private copy of them.

mod componentize;
mod sources;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use componentize::{build, componentize_py, tool_version};
use sources::Sources;

/// The componentize-py release sockbox's Python guests are built and tested with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The world a Python guest is built against.
const WORLD: &str = "sockbox:guest/server";

/// The WIT package, relative to `wit/`.
const WIT: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("deps/cli.wit", include_str!("../../../wit/deps/cli.wit")),
    (
        "deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    ("deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

/// The support package every Python guest may import, relative to its Python path entry
/// (`guests/python/sockbox_guest/*.py`, listed by build.rs).
const SUPPORT: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/python_support.rs"));

/// Python modules people name a tutorial script after; a guest module of that name would hide
/// the standard library's own (the support package imports several of them).
const SHADOWED: &[&str] = &[
    "asyncio",
    "datetime",
    "errno",
    "inspect",
    "ipaddress",
    "json",
    "queue",
    "random",
    "re",
    "select",
    "signal",
    "socket",
    "string",
    "sys",
    "time",
    "traceback",
    "types",
];

/// Is `path` a Python guest (`.py`), to be built before it can run?
pub fn is_python(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "py")
}

/// The component of the Python guest `script`: from `cache_dir` when the same sources were
/// built before (and the entry is authentic), else built with componentize-py from a private
/// copy of them (and stored there when there is a cache).
pub fn component(script: &Path, cache_dir: Option<&Path>) -> Result<Vec<u8>> {
    let module = module_name(script)?;
    let dir = script_dir(script)?;
    let tool = componentize_py()?;
    let version = tool_version(&tool)?;
    if version != COMPONENTIZE_PY_VERSION {
        tracing::warn!(
            "sockbox's Python guests are tested with componentize-py {COMPONENTIZE_PY_VERSION}; \
             {} is {version}",
            tool.display()
        );
    }
    // Read once: what is hashed is exactly what is built.
    let sources = Sources::read(&dir)?;
    if !sources
        .files
        .iter()
        .any(|(name, _)| *name == format!("{module}.py"))
    {
        bail!(
            "{} is not a regular file inside {} (sockbox does not follow links out of a \
             guest's directory)",
            script.display(),
            dir.display()
        );
    }
    let key = source_key(&version, &module, &sources);
    let store = cache_dir.and_then(crate::compile::cache::trusted);
    let entry = Path::new("python").join(format!("{key}.wasm"));
    let context = format!("python {key}").into_bytes();
    if let Some(store) = &store {
        match store.read(&entry, &context) {
            Ok(Some(bytes)) => {
                tracing::debug!("Python guest {} from the cache", script.display());
                return Ok(bytes);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(
                "ignoring the cached build of {}: {err:#}; building it again",
                script.display()
            ),
        }
    }
    let bytes = build(&tool, &module, &sources)
        .with_context(|| format!("building the Python guest {}", script.display()))?;
    if let Some(store) = &store
        && let Err(err) = store.write(&entry, &context, &bytes)
    {
        tracing::warn!("cannot keep the built component in the cache: {err:#}");
    }
    Ok(bytes)
}

/// The module componentize-py imports: the file's stem, which must be a plain identifier.
fn module_name(script: &Path) -> Result<String> {
    let stem = script
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    is_guest_name(stem)
        .with_context(|| format!("{} cannot be a Python guest", script.display()))?;
    Ok(stem.to_string())
}

/// Can `stem` name a Python guest's module? Says why not.
pub fn is_guest_name(stem: &str) -> Result<()> {
    let identifier = stem.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        bail!("`{stem}` is not a Python module name (letters, digits and _), e.g. my_server.py");
    }
    if SHADOWED.contains(&stem) || stem == "sockbox_guest" || stem == "wit_world" {
        bail!(
            "`{stem}.py` would hide Python's own `{stem}` module inside the guest: rename it \
             (e.g. {stem}_server.py)"
        );
    }
    Ok(())
}

fn script_dir(script: &Path) -> Result<PathBuf> {
    if !script.is_file() {
        bail!(
            "cannot read the Python guest {}: no such file",
            script.display()
        );
    }
    let dir = script.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    dir.canonicalize()
        .with_context(|| format!("the directory of {}", script.display()))
}

/// SHA-256 over everything the component is made of: the tool's version, the world, the
/// support package, and every Python file in the guest's directory.
fn source_key(version: &str, module: &str, sources: &Sources) -> String {
    let mut hasher = Sha256::new();
    let mut feed = |name: &str, bytes: &[u8]| {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    feed("componentize-py", version.as_bytes());
    feed("module", module.as_bytes());
    for (name, text) in WIT.iter().chain(SUPPORT) {
        feed(name, text.as_bytes());
    }
    for (relative, bytes) in &sources.files {
        feed(relative, bytes);
    }
    crate::compile::cache::hex(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn module_names_must_be_importable_and_not_hide_the_stdlib() {
        let tmp = std::env::temp_dir();
        assert_eq!(module_name(&tmp.join("echo.py")).unwrap(), "echo");
        assert_eq!(module_name(&tmp.join("udp_echo.py")).unwrap(), "udp_echo");
        let err = format!("{:#}", module_name(&tmp.join("udp-echo.py")).unwrap_err());
        assert!(err.contains("not a Python module name"), "{err}");
        let err = format!("{:#}", module_name(&tmp.join("time.py")).unwrap_err());
        assert!(err.contains("hide Python's own `time`"), "{err}");
        assert!(err.contains("time_server.py"), "{err}");
    }

    #[test]
    fn the_key_changes_with_any_python_file_of_the_directory() {
        let dir = std::env::temp_dir().join(format!("sockbox-pykey-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("pkg/__pycache__")).unwrap();
        fs::write(dir.join("app.py"), "print(1)\n").unwrap();
        fs::write(dir.join("pkg/helper.py"), "X = 1\n").unwrap();
        let key = |version: &str, module: &str| {
            source_key(version, module, &Sources::read(&dir).unwrap())
        };
        let first = key("0.25.1", "app");
        assert_eq!(first, key("0.25.1", "app"));
        fs::write(dir.join("pkg/__pycache__/helper.py"), "junk").unwrap();
        fs::write(dir.join("notes.txt"), "not Python").unwrap();
        assert_eq!(first, key("0.25.1", "app"));
        fs::write(dir.join("pkg/helper.py"), "X = 2\n").unwrap();
        let second = key("0.25.1", "app");
        assert_ne!(first, second);
        assert_ne!(second, key("0.26.0", "app"));
        assert_ne!(second, key("0.25.1", "other"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
