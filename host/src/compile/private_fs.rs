//! The file operations the compile cache trusts: a root of this user that nobody else can
//! write, private subdirectories, files written aside and renamed into place, and reads that
//! never follow a link. What is in the files is `cache`'s business.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The cache root: created 0700 if missing; else it must be a directory of this user that
/// nobody else can write (a group- or world-readable one of ours is narrowed to 0700).
pub(super) fn check_dir(dir: &Path) -> Result<()> {
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
pub(super) fn private_subdir(root: &Path, sub: &Path) -> Result<()> {
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

/// Opens `path` for reading without following a link at it (nor blocking on a FIFO).
pub(super) fn open_no_follow(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Writes `parts` to `path` through a fresh 0600 file beside it (created with `O_EXCL` under
/// a random name, so nothing planted is written through), renamed into place: a reader never
/// sees half an entry, and a link at `path` is replaced, not followed.
pub(super) fn write_aside(path: &Path, parts: &[&[u8]]) -> Result<()> {
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

/// Is the file `path` somewhere under `dir` (both resolved)?
pub(super) fn inside(path: &Path, dir: &Path) -> bool {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (
        parent.unwrap_or(Path::new(".")).canonicalize(),
        dir.canonicalize(),
    ) {
        (Ok(parent), Ok(dir)) => parent.starts_with(dir),
        _ => false,
    }
}
