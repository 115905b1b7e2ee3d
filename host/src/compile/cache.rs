//! The on-disk cache of compiled components, so a guest starts in milliseconds instead of being
//! compiled again at every `sockbox run`.
//!
//! Loading a compiled artifact is `unsafe` in wasmtime: its bytes become machine code. So the
//! cache trusts nothing it did not write itself, and nobody else can write it:
//!
//! - the cache directory must belong to this user and be writable by nobody else; one that is
//!   not is not used (one warning per process, then every start compiles);
//! - directories are created 0700 and files 0600, files through a fresh temporary file in the
//!   same directory (`O_EXCL`), renamed into place; entries are opened with `O_NOFOLLOW`, so a
//!   link planted at an entry's path is refused, never followed;
//! - every entry carries an HMAC-SHA256 under a per-user secret key kept *outside* the cache
//!   directory (`SOCKBOX_CACHE_KEY_FILE`, else `sockbox/cache.key` in the user's config
//!   directory), over what it is the entry of (the source's SHA-256 and the engine's
//!   compatibility hash) and its artifact. An entry that was planted, restored from elsewhere,
//!   moved to another entry's path, truncated or damaged fails the check and is compiled again.
//!
//! The Python build cache (componentize-py's output) goes through the same [`Trusted`] store.
//! Here: the entry format and its tag; the file operations are in `private_fs`, the key in `key`.

use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::key::{KEY_LEN, key_path, user_key};
use super::private_fs::{check_dir, inside, open_no_follow, private_subdir, write_aside};

/// Marks a file as one of ours, in this layout (01 was an unauthenticated SHA-256).
const MAGIC: &[u8; 8] = b"sockbx02";

/// Length of the HMAC-SHA256 tag after the magic.
const TAG: usize = 32;

/// Largest entry read back (a Python guest compiles to tens of MB); anything bigger in the
/// cache was not written by us and is not read into memory.
const MAX_ENTRY: u64 = 1 << 30;

type HmacSha256 = Hmac<Sha256>;

/// Where compiled components are kept between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CompileCache {
    /// Compile in memory only (once per process).
    #[default]
    Off,
    /// Keep compiled components in this directory (used only if it belongs to this user and
    /// nobody else can write it; see the module's documentation).
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

/// The compiled form of `bytes`: from `dir` when an authentic entry is there, else compiled
/// and written there for next time. A cache that cannot be used or written only costs time.
pub(crate) fn load_or_compile(
    dir: &Path,
    engine: &Engine,
    bytes: &[u8],
    compile: impl FnOnce() -> Result<Component>,
) -> Result<(Component, Origin)> {
    let Some(store) = trusted(dir) else {
        return Ok((compile()?, Origin::Compiled));
    };
    let (relative, context) = entry_of(engine, bytes);
    match store.read(&relative, &context) {
        Ok(Some(artifact)) => {
            // SAFETY: the HMAC under this user's secret key proves `store.write` below wrote
            // these bytes, whole, from wasmtime's own serialization of this very source for
            // an engine of this compatibility hash; wasmtime checks version and configuration
            // again before using them.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(err) => tracing::warn!(
                    "ignoring the cached component {}: wasmtime refused it: {err:#}; compiling \
                     it again",
                    store.dir.join(&relative).display()
                ),
            }
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(
            "ignoring the cached component {}: {err:#}; compiling it again",
            store.dir.join(&relative).display()
        ),
    }
    let component = compile()?;
    let written = component
        .serialize()
        .map_err(anyhow::Error::from)
        .and_then(|artifact| store.write(&relative, &context, &artifact));
    if let Err(err) = written {
        tracing::warn!(
            "cannot write the compile cache {}: {err:#} (use --no-cache to skip it)",
            store.dir.join(&relative).display()
        );
    }
    Ok((component, Origin::Compiled))
}

/// An entry's path under the cache directory, and what its tag binds it to.
fn entry_of(engine: &Engine, bytes: &[u8]) -> (PathBuf, Vec<u8>) {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let engine_id = format!("engine-{:016x}", hasher.finish());
    let source = hex(&Sha256::digest(bytes));
    let relative = Path::new(&engine_id).join(format!("{source}.cwasm"));
    let context = format!("component {engine_id} {source}").into_bytes();
    (relative, context)
}

/// A cache directory that passed the checks, with the key its entries are authenticated by.
pub(crate) struct Trusted {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

/// The cache at `dir` if it may be used: checked (and created 0700) once per process; when it
/// may not, one warning says why and `None` turns the cache off.
pub(crate) fn trusted(dir: &Path) -> Option<Arc<Trusted>> {
    static CHECKED: OnceLock<Mutex<HashMap<PathBuf, Option<Arc<Trusted>>>>> = OnceLock::new();
    let mut checked = CHECKED.get_or_init(Default::default).lock().unwrap();
    checked
        .entry(dir.to_path_buf())
        .or_insert_with(|| {
            let verdict = check_dir(dir).and_then(|()| {
                let key = user_key().map_err(|err| anyhow::anyhow!("{err}"))?;
                if let Some(path) = key_path()
                    && inside(&path, dir)
                {
                    bail!(
                        "its key {} is inside it: keep the key outside the cache (whoever \
                         restores or copies the cache would have it)",
                        path.display()
                    );
                }
                Ok(Arc::new(Trusted {
                    dir: dir.to_path_buf(),
                    key,
                }))
            });
            verdict
                .inspect_err(|err| {
                    tracing::warn!(
                        "not using the compile cache {}: {err:#}; every start compiles (use \
                         --no-cache to say so)",
                        dir.display()
                    )
                })
                .ok()
        })
        .clone()
}

impl Trusted {
    /// The payload of the entry at `relative` if it is there and authentic for `context`;
    /// `Ok(None)` when there is none, an error when there is one we must not use.
    pub(crate) fn read(&self, relative: &Path, context: &[u8]) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(relative);
        // A link in place of the entry's directory (a restored cache can hold one) is not
        // followed either; `write` replaces it with a directory.
        let parent = path.parent().expect("entries have a parent");
        if fs::symlink_metadata(parent).is_ok_and(|meta| !meta.is_dir()) {
            bail!("{} is not a directory of the cache", parent.display());
        }
        let file = match open_no_follow(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                bail!("it is a symbolic link, which the cache never follows")
            }
            Err(err) => return Err(err).context("cannot read it"),
        };
        let meta = file.metadata().context("cannot read it")?;
        if !meta.is_file() || meta.len() > MAX_ENTRY {
            bail!("not a cache entry (not a regular file, or too large)");
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_ENTRY)
            .read_to_end(&mut data)
            .context("cannot read it")?;
        if data.starts_with(b"sockbx01") {
            // An older sockbox's entry (unauthenticated): not used, and replaced quietly.
            tracing::debug!("{} is an entry of an older layout", path.display());
            return Ok(None);
        }
        let header = MAGIC.len() + TAG;
        if data.len() < header || !data.starts_with(MAGIC) {
            bail!("not a sockbox cache entry of this version");
        }
        let (tag, payload) = data[MAGIC.len()..].split_at(TAG);
        self.mac(context, payload)
            .verify_slice(tag)
            .map_err(|_| anyhow::anyhow!("its authentication tag does not match (planted, restored from elsewhere, truncated or corrupt)"))?;
        data.drain(..header);
        Ok(Some(data))
    }

    /// Writes `payload` as the entry at `relative`, authenticated for `context`.
    pub(crate) fn write(&self, relative: &Path, context: &[u8], payload: &[u8]) -> Result<()> {
        let path = self.dir.join(relative);
        // Entries live one level down (`engine-…/`, `python/`): that directory is ours.
        let parent = path.parent().expect("entries have a parent");
        private_subdir(&self.dir, parent)?;
        let tag = self.mac(context, payload).finalize().into_bytes();
        write_aside(&path, &[MAGIC, &tag, payload])
    }

    fn mac(&self, context: &[u8], payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(MAGIC);
        mac.update(&(context.len() as u64).to_le_bytes());
        mac.update(context);
        mac.update(payload);
        mac
    }
}

/// Lower-case hex of `bytes`, for entry names.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
