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

use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Marks a file as one of ours, in this layout (01 was an unauthenticated SHA-256).
const MAGIC: &[u8; 8] = b"sockbx02";

/// Length of the HMAC-SHA256 tag after the magic.
const TAG: usize = 32;

/// Length of the secret key.
const KEY_LEN: usize = 32;

/// Largest entry read back (a Python guest compiles to tens of MB); anything bigger in the
/// cache was not written by us and is not read into memory.
const MAX_ENTRY: u64 = 1 << 30;

/// Environment variable naming the key file (tests, or a key kept elsewhere).
pub const KEY_FILE_ENV: &str = "SOCKBOX_CACHE_KEY_FILE";

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

/// The cache root: created 0700 if missing; else it must be a directory of this user that
/// nobody else can write (a group- or world-readable one of ours is narrowed to 0700).
fn check_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", dir.display())),
        Ok(_) => {}
    }
    // The root may be reached through a link the user made (e.g. ~/.cache on another disk):
    // what counts is the directory it names.
    let meta = fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("it is not a directory");
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!("it belongs to user {}, not to this user ({me})", meta.uid());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!("it is writable by group or others (mode {mode:04o}; `chmod 700` it)");
    }
    if mode & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(())
}

/// Makes `sub` (a direct child of the checked `root`) a private directory of ours: created
/// 0700; anything else at its path (a planted link, a file) is removed first.
fn private_subdir(root: &Path, sub: &Path) -> Result<()> {
    debug_assert_eq!(sub.parent(), Some(root));
    match fs::symlink_metadata(sub) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            fs::remove_file(sub).with_context(|| format!("cannot remove {}", sub.display()))?
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", sub.display())),
    }
    match fs::DirBuilder::new().mode(0o700).create(sub) {
        Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(err).with_context(|| format!("cannot create {}", sub.display()))
        }
        _ => Ok(()),
    }
}

fn open_no_follow(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Writes `parts` to `path` through a fresh 0600 file beside it (created with `O_EXCL` under
/// a random name, so nothing planted is written through), renamed into place: a reader never
/// sees half an entry, and a link at `path` is replaced, not followed.
fn write_aside(path: &Path, parts: &[&[u8]]) -> Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    let mut file = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    for part in parts {
        file.write_all(part)?;
    }
    file.as_file().sync_all()?;
    file.persist(path).map_err(|err| err.error)?;
    Ok(())
}

/// This user's cache key: read from the key file, or made (32 random bytes, 0600) when there
/// is none. Loaded once per process; an error says why the cache cannot be used.
fn user_key() -> Result<[u8; KEY_LEN], String> {
    static KEY: OnceLock<Result<[u8; KEY_LEN], String>> = OnceLock::new();
    KEY.get_or_init(|| {
        let path = key_path().ok_or_else(|| {
            format!("there is no config directory for its key (set {KEY_FILE_ENV})")
        })?;
        load_or_make_key(&path).map_err(|err| format!("key {}: {err:#}", path.display()))
    })
    .clone()
}

/// Is the file `path` somewhere under `dir` (both resolved)?
fn inside(path: &Path, dir: &Path) -> bool {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (
        parent.unwrap_or(Path::new(".")).canonicalize(),
        dir.canonicalize(),
    ) {
        (Ok(parent), Ok(dir)) => parent.starts_with(dir),
        _ => false,
    }
}

/// `SOCKBOX_CACHE_KEY_FILE`, else `sockbox/cache.key` in the user's config directory.
pub(crate) fn key_path() -> Option<PathBuf> {
    match std::env::var_os(KEY_FILE_ENV) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => dirs::config_dir().map(|dir| dir.join("sockbox").join("cache.key")),
    }
}

/// The key at `path`. It must be a regular file of this user in a directory nobody else can
/// write; one that others could read (or of the wrong length) is replaced by a new key, which
/// only costs compiling each guest once more.
fn load_or_make_key(path: &Path) -> Result<[u8; KEY_LEN]> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let me = rustix::process::geteuid().as_raw();
    let dir_meta =
        fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    if dir_meta.uid() != me || dir_meta.mode() & 0o022 != 0 {
        bail!(
            "its directory {} must belong to this user and be writable by nobody else",
            dir.display()
        );
    }
    match open_no_follow(path) {
        Ok(mut file) => {
            let meta = file.metadata()?;
            if !meta.is_file() || meta.uid() != me {
                bail!("it is not a regular file of this user");
            }
            let mut key = [0; KEY_LEN];
            let mut rest = Vec::new();
            let whole = file.read_exact(&mut key).is_ok()
                && file.read_to_end(&mut rest).is_ok()
                && rest.is_empty();
            if meta.mode() & 0o077 == 0 && whole {
                return Ok(key);
            }
            tracing::warn!(
                "the compile cache key {} was readable by others or damaged (mode {:04o}): \
                 making a new one (cached components are compiled again once)",
                path.display(),
                meta.mode() & 0o7777
            );
            make_key(path, true)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => make_key(path, false),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            bail!("it is a symbolic link; the key must be a regular file")
        }
        Err(err) => Err(err).context("cannot read it"),
    }
}

fn make_key(path: &Path, replace: bool) -> Result<[u8; KEY_LEN]> {
    let mut key = [0; KEY_LEN];
    getrandom::fill(&mut key).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".tmp-key-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(&key)?;
    file.as_file().sync_all()?;
    if replace {
        file.persist(path).map_err(|err| err.error)?;
    } else if let Err(err) = file.persist_noclobber(path) {
        // Another sockbox made it first: use that one.
        if err.error.kind() == std::io::ErrorKind::AlreadyExists {
            let mut key = [0; KEY_LEN];
            open_no_follow(path)?.read_exact(&mut key)?;
            return Ok(key);
        }
        return Err(err.error.into());
    }
    Ok(key)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> Trusted {
        let dir = std::env::temp_dir().join(format!("sockbox-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        check_dir(&dir).unwrap();
        Trusted {
            dir,
            key: [7; KEY_LEN],
        }
    }

    #[test]
    fn an_entry_reads_back_only_under_its_own_key_and_context() {
        let store = store("roundtrip");
        let entry = Path::new("engine-1/a.cwasm");
        store.write(entry, b"a", b"some compiled code").unwrap();
        assert_eq!(
            store.read(entry, b"a").unwrap().unwrap(),
            b"some compiled code"
        );
        // Moved to another entry's name, or read with another key: refused.
        assert!(store.read(entry, b"b").is_err());
        let other = Trusted {
            dir: store.dir.clone(),
            key: [8; KEY_LEN],
        };
        assert!(other.read(entry, b"a").is_err());
        assert!(
            store
                .read(Path::new("engine-1/none.cwasm"), b"a")
                .unwrap()
                .is_none()
        );
        fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn truncated_flipped_or_foreign_entries_are_refused() {
        let store = store("damaged");
        let entry = Path::new("engine-1/a.cwasm");
        store.write(entry, b"a", b"some compiled code").unwrap();
        let path = store.dir.join(entry);
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut foreign = good.clone();
        foreign[0] = b'X';
        for bad in [
            &good[..good.len() - 1],
            &flipped,
            &foreign,
            &good[..MAGIC.len() + TAG],
        ] {
            fs::write(&path, bad).unwrap();
            assert!(store.read(entry, b"a").is_err());
        }
        fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn created_directories_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let store = store("modes");
        store.write(Path::new("python/k.wasm"), b"k", b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.dir), 0o700);
        assert_eq!(mode(&store.dir.join("python")), 0o700);
        assert_eq!(mode(&store.dir.join("python/k.wasm")), 0o600);
        fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn a_group_or_world_writable_root_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("sockbox-cache-open-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        for mode in [0o777, 0o770, 0o722] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let err = format!("{:#}", check_dir(&dir).unwrap_err());
            assert!(err.contains("writable by group or others"), "{err}");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        check_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_inside_the_cache_is_seen() {
        let dir = std::env::temp_dir().join(format!("sockbox-cache-in-{}", std::process::id()));
        fs::create_dir_all(dir.join("sub")).unwrap();
        assert!(inside(&dir.join("cache.key"), &dir));
        assert!(inside(&dir.join("sub/cache.key"), &dir));
        assert!(inside(&dir.join("sub/../cache.key"), &dir.join(".")));
        assert!(!inside(&dir.join("cache.key"), &dir.join("sub")));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_is_made_private_and_a_readable_one_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("sockbox-cache-key-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub/cache.key");
        let first = load_or_make_key(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(load_or_make_key(&path).unwrap(), first);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let second = load_or_make_key(&path).unwrap();
        assert_ne!(second, first);
        assert_eq!(mode(&path), 0o600);
        // A link is refused, not followed.
        let link = dir.join("sub/link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = format!("{:#}", load_or_make_key(&link).unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
