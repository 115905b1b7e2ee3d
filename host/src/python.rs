//! Python guests: `sockbox run app.py` builds `app.py` into a component with componentize-py,
//! against the world and the `sockbox_guest` support package embedded in this binary, and
//! keeps the result in the cache, keyed by everything that went into it.
//!
//! componentize-py is not a Rust crate: sockbox finds it (`SOCKBOX_COMPONENTIZE_PY`, else
//! `componentize-py` on `PATH`) and says how to install the tested version when it is missing.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The componentize-py release sockbox's Python guests are built and tested with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The world a Python guest is built against.
const WORLD: &str = "sockbox:guest/server";

/// The WIT package, relative to `wit/`.
const WIT: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../wit/world.wit")),
    ("deps/cli.wit", include_str!("../../wit/deps/cli.wit")),
    ("deps/clocks.wit", include_str!("../../wit/deps/clocks.wit")),
    (
        "deps/filesystem.wit",
        include_str!("../../wit/deps/filesystem.wit"),
    ),
    ("deps/io.wit", include_str!("../../wit/deps/io.wit")),
    ("deps/random.wit", include_str!("../../wit/deps/random.wit")),
    (
        "deps/sockets.wit",
        include_str!("../../wit/deps/sockets.wit"),
    ),
];

/// The support package every Python guest may import, relative to its Python path entry.
const SUPPORT: &[(&str, &str)] = &[
    (
        "sockbox_guest/__init__.py",
        include_str!("../../guests/python/sockbox_guest/__init__.py"),
    ),
    (
        "sockbox_guest/_loop.py",
        include_str!("../../guests/python/sockbox_guest/_loop.py"),
    ),
    (
        "sockbox_guest/_net.py",
        include_str!("../../guests/python/sockbox_guest/_net.py"),
    ),
];

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

/// Most Python files the build hashes: a script meant for a guest lives in its own directory,
/// and componentize-py takes that whole directory into the component.
const MAX_FILES: usize = 2_000;

/// Is `path` a Python guest (`.py`), to be built before it can run?
pub fn is_python(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "py")
}

/// The component of the Python guest `script`: from `cache_dir` when the same sources were
/// built before, else built with componentize-py (and stored there when there is a cache).
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
    let key = source_key(&version, &module, &dir)?;
    let cached = cache_dir.map(|dir| dir.join("python").join(format!("{key}.wasm")));
    if let Some(path) = &cached
        && let Ok(bytes) = fs::read(path)
    {
        tracing::debug!("Python guest {} from {}", script.display(), path.display());
        return Ok(bytes);
    }
    let scratch = match cache_dir {
        Some(dir) => dir.join("python"),
        None => std::env::temp_dir(),
    };
    let bytes = build(&tool, &module, &dir, &scratch)
        .with_context(|| format!("building the Python guest {}", script.display()))?;
    if let Some(path) = &cached
        && let Err(err) = crate::sandbox::write_aside(path, &[&bytes])
    {
        tracing::warn!(
            "cannot keep the built component in {}: {err:#}",
            path.display()
        );
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

/// `SOCKBOX_COMPONENTIZE_PY`, else `componentize-py` on `PATH`.
pub fn componentize_py() -> Result<PathBuf> {
    if let Some(tool) = std::env::var_os("SOCKBOX_COMPONENTIZE_PY").filter(|v| !v.is_empty()) {
        let tool = PathBuf::from(tool);
        if !tool.is_file() {
            bail!(
                "SOCKBOX_COMPONENTIZE_PY is {}, which is not a file",
                tool.display()
            );
        }
        return Ok(tool);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("componentize-py"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "building a Python guest needs componentize-py, which is not on PATH: install it \
                 with `python3 -m pip install componentize-py=={COMPONENTIZE_PY_VERSION}` (in a \
                 virtual environment if you like), or set SOCKBOX_COMPONENTIZE_PY to its path"
            )
        })
}

fn tool_version(tool: &Path) -> Result<String> {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", tool.display()))?;
    if !out.status.success() {
        bail!(
            "{} --version failed: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // "componentize-py 0.25.1"
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string())
}

/// SHA-256 over everything the component is made of: the tool's version, the world, the
/// support package, and every Python file in the guest's directory.
fn source_key(version: &str, module: &str, dir: &Path) -> Result<String> {
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
    let mut files = Vec::new();
    python_files(dir, dir, &mut files)?;
    files.sort();
    for (relative, path) in files {
        let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        feed(&relative, &bytes);
    }
    Ok(crate::sandbox::hex(&hasher.finalize()))
}

fn python_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "__pycache__" || name == "target" {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            python_files(root, &path, out)?;
        } else if name.ends_with(".py") {
            if out.len() >= MAX_FILES {
                bail!(
                    "{} holds more than {MAX_FILES} Python files; a Python guest goes in its own \
                     directory (componentize-py takes all of it into the component)",
                    root.display()
                );
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.push((relative.to_string_lossy().into_owned(), path));
        }
    }
    Ok(())
}

/// Runs componentize-py in a scratch directory holding the WIT package and the support
/// package, with the guest's own directory first on the Python path.
fn build(tool: &Path, module: &str, dir: &Path, scratch: &Path) -> Result<Vec<u8>> {
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    let work = scratch.join(format!(
        "build-{}-{}",
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        for (name, text) in WIT {
            write(&work.join("wit").join(name), text)?;
        }
        for (name, text) in SUPPORT {
            write(&work.join("support").join(name), text)?;
        }
        let out = work.join(format!("{module}.wasm"));
        let started = std::time::Instant::now();
        let output = Command::new(tool)
            .arg("--quiet")
            .arg("--wit-path")
            .arg(work.join("wit"))
            .args(["--world", WORLD, "componentize"])
            .args(python_path(&[dir, &work.join("support")]))
            .arg(module)
            .arg("--output")
            .arg(&out)
            .output()
            .with_context(|| format!("run {}", tool.display()))?;
        if !output.status.success() {
            bail!(
                "componentize-py failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        tracing::info!("built Python module `{module}` in {:?}", started.elapsed());
        fs::read(&out).with_context(|| format!("read {}", out.display()))
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

fn python_path(dirs: &[&Path]) -> Vec<OsString> {
    dirs.iter()
        .flat_map(|dir| [OsString::from("--python-path"), dir.as_os_str().to_owned()])
        .collect()
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let first = source_key("0.25.1", "app", &dir).unwrap();
        assert_eq!(first, source_key("0.25.1", "app", &dir).unwrap());
        fs::write(dir.join("pkg/__pycache__/helper.py"), "junk").unwrap();
        fs::write(dir.join("notes.txt"), "not Python").unwrap();
        assert_eq!(first, source_key("0.25.1", "app", &dir).unwrap());
        fs::write(dir.join("pkg/helper.py"), "X = 2\n").unwrap();
        let second = source_key("0.25.1", "app", &dir).unwrap();
        assert_ne!(first, second);
        assert_ne!(second, source_key("0.26.0", "app", &dir).unwrap());
        assert_ne!(second, source_key("0.25.1", "other", &dir).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
