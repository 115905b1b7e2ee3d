//! The guest's side of a Python build: the Python files of its directory, read once (what is
//! hashed for the cache is exactly what is built), bounded, and never from outside it.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Most Python files a guest's directory may hold: a script meant for a guest lives in its
/// own directory, and every Python file of it is copied into the build.
const MAX_FILES: usize = 2_000;

/// Most bytes of Python those files may hold together.
const MAX_BYTES: u64 = 64 << 20;

/// Most directories walked, and how deep, looking for them (a script in a home directory
/// would otherwise walk all of it).
const MAX_DIRS: usize = 2_000;
const MAX_DEPTH: usize = 16;

/// The Python files of a guest's directory (path relative to it, contents), sorted by path.
/// Bounded in number, total size and the directories walked; links are followed only to
/// files inside the directory, and only regular files are read (a FIFO would block).
pub(super) struct Sources {
    pub(super) files: Vec<(String, Vec<u8>)>,
}

impl Sources {
    pub(super) fn read(root: &Path) -> Result<Sources> {
        let mut walk = Walk {
            root,
            files: Vec::new(),
            bytes: 0,
            dirs: 0,
        };
        walk.dir(root, 0)?;
        walk.files.sort();
        Ok(Sources { files: walk.files })
    }
}

struct Walk<'a> {
    root: &'a Path,
    files: Vec<(String, Vec<u8>)>,
    bytes: u64,
    dirs: usize,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, depth: usize) -> Result<()> {
        self.dirs += 1;
        if self.dirs > MAX_DIRS || depth > MAX_DEPTH {
            bail!(
                "{} holds more than {MAX_DIRS} directories or nests them deeper than \
                 {MAX_DEPTH}; a Python guest goes in its own directory (all of its Python \
                 files go into the component)",
                self.root.display()
            );
        }
        for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" || name == "target" {
                continue;
            }
            let path = entry.path();
            // The entry itself, not what a link names.
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.dir(&path, depth + 1)?;
            } else if name.ends_with(".py") && (kind.is_file() || kind.is_symlink()) {
                self.file(&path, kind.is_symlink())?;
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, link: bool) -> Result<()> {
        let relative = path.strip_prefix(self.root).unwrap_or(path);
        let relative = relative.to_string_lossy().into_owned();
        let target = if link {
            match path.canonicalize() {
                Ok(target) if target.starts_with(self.root) && target.is_file() => target,
                _ => {
                    tracing::warn!(
                        "not taking {} into the Python guest: it is a link to outside {} (or \
                         to no file)",
                        path.display(),
                        self.root.display()
                    );
                    return Ok(());
                }
            }
        } else {
            path.to_path_buf()
        };
        if self.files.len() >= MAX_FILES {
            bail!(
                "{} holds more than {MAX_FILES} Python files; a Python guest goes in its own \
                 directory (all of its Python files go into the component)",
                self.root.display()
            );
        }
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&target)
            .with_context(|| format!("read {}", path.display()))?;
        if !file.metadata()?.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        let room = MAX_BYTES - self.bytes;
        let mut bytes = Vec::new();
        file.take(room + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("read {}", path.display()))?;
        if bytes.len() as u64 > room {
            bail!(
                "the Python files of {} hold more than {} MiB; a Python guest goes in its own \
                 directory (all of its Python files go into the component)",
                self.root.display(),
                MAX_BYTES >> 20
            );
        }
        self.bytes += bytes.len() as u64;
        self.files.push((relative, bytes));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_inside_the_directory_and_are_bounded() {
        let dir = std::env::temp_dir().join(format!("sockbox-pysrc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let outside = dir.with_extension("outside");
        fs::create_dir_all(dir.join("guest/sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let guest = dir.join("guest");
        fs::write(guest.join("app.py"), "import helper\n").unwrap();
        fs::write(guest.join("sub/helper.py"), "X = 1\n").unwrap();
        fs::write(outside.join("secret.py"), "KEY = 'do not copy'\n").unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, guest.join(name)).unwrap()
        };
        link(&guest.join("sub/helper.py"), "helper.py"); // inside: taken, as a copy
        link(&outside.join("secret.py"), "secret.py"); // outside: left out
        link(&outside, "elsewhere"); // a linked directory: not walked
        let fifo =
            std::ffi::CString::new(guest.join("pipe.py").into_os_string().into_encoded_bytes());
        assert_eq!(unsafe { libc::mkfifo(fifo.unwrap().as_ptr(), 0o600) }, 0); // never read
        let names: Vec<_> = Sources::read(&guest)
            .unwrap()
            .files
            .into_iter()
            .map(|(name, bytes)| (name, String::from_utf8(bytes).unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("app.py".to_string(), "import helper\n".to_string()),
                ("helper.py".to_string(), "X = 1\n".to_string()),
                ("sub/helper.py".to_string(), "X = 1\n".to_string()),
            ]
        );

        // Too much Python is refused with a clear error, before anything is built.
        fs::write(guest.join("big.py"), vec![b'#'; MAX_BYTES as usize + 1]).unwrap();
        let err = format!("{:#}", Sources::read(&guest).err().unwrap());
        assert!(err.contains("more than 64 MiB"), "{err}");
        fs::remove_file(guest.join("big.py")).unwrap();
        let mut deep = guest.clone();
        for _ in 0..=MAX_DEPTH {
            deep = deep.join("d");
        }
        fs::create_dir_all(&deep).unwrap();
        let err = format!("{:#}", Sources::read(&guest).err().unwrap());
        assert!(err.contains("deeper than"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }
}
