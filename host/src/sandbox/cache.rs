//! The on-disk cache of compiled components, so a guest starts in milliseconds instead of being
//! compiled again at every `sockbox run`.
//!
//! An entry is keyed by the SHA-256 of the component's bytes, under a directory named for the
//! engine's compatibility hash (wasmtime version and every setting that changes the code), and
//! holds the SHA-256 of the artifact in front of it. Loading a compiled artifact is `unsafe` in
//! wasmtime because the bytes become machine code, so an entry is trusted only if its checksum
//! matches; a stale, truncated or corrupt entry is compiled again and rewritten, never used.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Marks a file as one of ours, in this layout.
const MAGIC: &[u8; 8] = b"sockbx01";

/// Where compiled components are kept between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CompileCache {
    /// Compile in memory only (once per process).
    #[default]
    Off,
    /// Keep compiled components in this directory.
    Dir(PathBuf),
}

impl CompileCache {
    /// The cache's directory, if it is on.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            CompileCache::Dir(dir) => Some(dir),
            CompileCache::Off => None,
        }
    }

    /// `SOCKBOX_CACHE_DIR` if set, else `sockbox` in the user's cache directory
    /// (`$XDG_CACHE_HOME`, `~/.cache`...); off if there is neither.
    pub fn user_default() -> CompileCache {
        match std::env::var_os("SOCKBOX_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => CompileCache::Dir(PathBuf::from(dir)),
            _ => dirs::cache_dir()
                .map(|dir| CompileCache::Dir(dir.join("sockbox")))
                .unwrap_or(CompileCache::Off),
        }
    }
}

/// How a component was obtained, for logs and the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Compiled,
    Cached,
}

/// The compiled form of `bytes`: from `dir` when a sound entry is there, else compiled and
/// written there for next time. A cache that cannot be written only costs the next start.
pub(crate) fn load_or_compile(
    dir: &Path,
    engine: &Engine,
    bytes: &[u8],
    compile: impl FnOnce() -> Result<Component>,
) -> Result<(Component, Origin)> {
    let path = entry_path(dir, engine, bytes);
    match load(engine, &path) {
        Ok(Some(component)) => return Ok((component, Origin::Cached)),
        Ok(None) => {}
        Err(err) => tracing::warn!(
            "ignoring the cached component {}: {err:#}; compiling it again",
            path.display()
        ),
    }
    let component = compile()?;
    if let Err(err) = store(&path, &component) {
        tracing::warn!(
            "cannot write the compile cache {}: {err:#} (use --no-cache to skip it)",
            path.display()
        );
    }
    Ok((component, Origin::Compiled))
}

fn entry_path(dir: &Path, engine: &Engine, bytes: &[u8]) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let engine_dir = format!("engine-{:016x}", hasher.finish());
    dir.join(engine_dir)
        .join(format!("{}.cwasm", hex(&Sha256::digest(bytes))))
}

/// `Ok(None)` when there is no entry; an error when there is one we must not use.
fn load(engine: &Engine, path: &Path) -> Result<Option<Component>> {
    let file = match fs::read(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).context("cannot read it"),
    };
    let artifact = verified_artifact(&file)?;
    // SAFETY: the artifact was written by `store` below from wasmtime's own serialization (the
    // checksum proves it is those bytes, whole), and wasmtime checks that it was compiled by
    // this version with this configuration before using it.
    let component = unsafe { Component::deserialize(engine, artifact) }
        .map_err(anyhow::Error::from)
        .context("wasmtime refused it")?;
    Ok(Some(component))
}

/// The artifact inside a cache file, if the file is whole and of this layout.
fn verified_artifact(file: &[u8]) -> Result<&[u8]> {
    let header = MAGIC.len() + 32;
    anyhow::ensure!(
        file.len() > header && file.starts_with(MAGIC),
        "not a sockbox cache entry"
    );
    let (sum, artifact) = file[MAGIC.len()..].split_at(32);
    anyhow::ensure!(
        Sha256::digest(artifact).as_slice() == sum,
        "checksum mismatch (truncated or corrupt)"
    );
    Ok(artifact)
}

fn store(path: &Path, component: &Component) -> Result<()> {
    let artifact = component.serialize().map_err(anyhow::Error::from)?;
    write_aside(path, &[MAGIC, &Sha256::digest(&artifact), &artifact])
}

/// Writes `parts` to `path` through a file beside it, renamed into place, so a reader never
/// sees half a cache entry.
pub(crate) fn write_aside(path: &Path, parts: &[&[u8]]) -> Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = fs::File::create(&tmp)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(artifact: &[u8]) -> Vec<u8> {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(artifact));
        file.extend_from_slice(artifact);
        file
    }

    #[test]
    fn a_whole_entry_gives_back_its_artifact() {
        assert_eq!(verified_artifact(&entry(b"code")).unwrap(), b"code");
    }

    #[test]
    fn truncated_flipped_or_foreign_entries_are_refused() {
        let good = entry(b"some compiled code");
        assert!(verified_artifact(&good[..good.len() - 1]).is_err());
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(verified_artifact(&flipped).is_err());
        let mut foreign = good.clone();
        foreign[0] = b'X';
        assert!(verified_artifact(&foreign).is_err());
        assert!(verified_artifact(&good[..MAGIC.len() + 32]).is_err());
    }
}
