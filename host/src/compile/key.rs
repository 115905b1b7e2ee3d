//! The per-user secret that authenticates compile cache entries, kept outside the cache
//! directory: whoever can write the cache (or restores it from elsewhere) cannot forge an
//! entry without it.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use super::private_fs::open_no_follow;

/// Length of the secret key.
pub(super) const KEY_LEN: usize = 32;

/// Environment variable naming the key file (tests, or a key kept elsewhere).
pub const KEY_FILE_ENV: &str = "SOCKBOX_CACHE_KEY_FILE";

/// This user's cache key: read from the key file, or made (32 random bytes, 0600) when there
/// is none. Loaded once per process; an error says why the cache cannot be used.
pub(super) fn user_key() -> Result<[u8; KEY_LEN], String> {
    static KEY: OnceLock<Result<[u8; KEY_LEN], String>> = OnceLock::new();
    KEY.get_or_init(|| {
        let path = key_path().ok_or_else(|| {
            format!("there is no config directory for its key (set {KEY_FILE_ENV})")
        })?;
        load_or_make_key(&path).map_err(|err| format!("key {}: {err:#}", path.display()))
    })
    .clone()
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
pub(super) fn load_or_make_key(path: &Path) -> Result<[u8; KEY_LEN]> {
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

/// Writes a new random key at `path` (0600); `replace` a key that was there.
pub(super) fn make_key(path: &Path, replace: bool) -> Result<[u8; KEY_LEN]> {
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
