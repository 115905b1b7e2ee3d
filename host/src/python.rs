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

/// The support package every Python guest may import, relative to its Python path entry
/// (the list lives beside the package).
const SUPPORT: &[(&str, &str)] = include!("../../guests/python/support_files.rs");

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

/// Most Python files a guest's directory may hold: a script meant for a guest lives in its
/// own directory, and every Python file of it is copied into the build.
const MAX_FILES: usize = 2_000;

/// Most bytes of Python those files may hold together.
const MAX_BYTES: u64 = 64 << 20;

/// Most directories walked, and how deep, looking for them (a script in a home directory
/// would otherwise walk all of it).
const MAX_DIRS: usize = 2_000;
const MAX_DEPTH: usize = 16;

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

/// The Python files of a guest's directory (path relative to it, contents), sorted by path.
/// Bounded in number, total size and the directories walked; links are followed only to
/// files inside the directory, and only regular files are read (a FIFO would block).
struct Sources {
    files: Vec<(String, Vec<u8>)>,
}

impl Sources {
    fn read(root: &Path) -> Result<Sources> {
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

/// Runs componentize-py on a private copy of the guest's sources.
///
/// componentize-py runs the module's top-level code at build time (pre-initialisation), in
/// wasmtime, with every `--python-path` directory (and a virtual environment's site-packages)
/// preopened read-write, environment variables of its own and no network. So it is handed
/// only a fresh directory (0700, removed after) holding read-only copies of the guest's Python
/// files and of the support package, and `VIRTUAL_ENV` names an empty environment there, so
/// no site-packages of the host (whose `.pth` files run at every Python start) is reachable.
/// The WIT package and the output are in the same directory, not preopened.
fn build(tool: &Path, module: &str, sources: &Sources) -> Result<Vec<u8>> {
    let work = tempfile::Builder::new()
        .prefix("sockbox-build-")
        .tempdir()
        .context("create a private build directory")?;
    let root = work.path();
    let result = (|| {
        let src = root.join("src");
        let support = root.join("support");
        let venv = root.join("venv");
        let site = venv.join("lib").join("site-packages");
        for (name, bytes) in &sources.files {
            write(&src.join(name), bytes)?;
        }
        for (name, text) in SUPPORT {
            write(&support.join(name), text.as_bytes())?;
        }
        for (name, text) in WIT {
            write(&root.join("wit").join(name), text.as_bytes())?;
        }
        fs::create_dir_all(&site)?;
        fs::create_dir_all(root.join("out"))?;
        fs::create_dir_all(root.join("tmp"))?;
        for dir in [&src, &support, &venv] {
            read_only(dir)?;
        }
        let out = root.join("out").join(format!("{module}.wasm"));
        let log = |name: &str| -> Result<fs::File> {
            let path = root.join("out").join(name);
            fs::File::create(&path).with_context(|| format!("create {}", path.display()))
        };
        let (stdout, stderr) = (log("stdout")?, log("stderr")?);
        // The guest's top-level code runs in there: a loop must not hold the build forever.
        let limit = build_timeout()?;
        let started = std::time::Instant::now();
        let mut child = Command::new(tool)
            .current_dir(root)
            .env("VIRTUAL_ENV", &venv)
            // Its own temporary files (the standard library it preopens for the guest, too)
            // go in here as well, so they go when this does, even after a kill.
            .env("TMPDIR", root.join("tmp"))
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .arg("--quiet")
            .arg("--wit-path")
            .arg(root.join("wit"))
            .args(["--world", WORLD, "componentize"])
            .args(python_path(&[&src, &support]))
            .arg(module)
            .arg("--output")
            .arg(&out)
            .die_with_parent()
            .spawn()
            .with_context(|| format!("run {}", tool.display()))?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "componentize-py did not finish within {} s (does the module's top-level \
                     code loop? it runs at build time); {BUILD_TIMEOUT_ENV} sets the limit",
                    limit.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if !status.success() {
            let text = format!(
                "{}{}",
                head(&root.join("out/stdout")),
                head(&root.join("out/stderr")).trim_end()
            );
            bail!("componentize-py failed:\n{text}");
        }
        tracing::info!("built Python module `{module}` in {:?}", started.elapsed());
        fs::read(&out).with_context(|| format!("read {}", out.display()))
    })();
    // The copies are read-only (0500 directories): give the directories back their write bit
    // so the temporary directory can be removed. Links are not followed.
    writable(root);
    drop(work);
    result
}

/// A build whose sockbox is gone (killed) must not spin on: the guest's code runs in it.
trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    #[cfg(target_os = "linux")]
    fn die_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: between fork and exec the closure makes one async-signal-safe system call
        // and touches no memory of the parent. The signal comes when the forking thread ends,
        // and that thread waits for the build below.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn die_with_parent(&mut self) -> &mut Self {
        self
    }
}

/// Environment variable: seconds a Python build may take (default [`BUILD_TIMEOUT`]).
pub const BUILD_TIMEOUT_ENV: &str = "SOCKBOX_BUILD_TIMEOUT";

/// How long componentize-py may run: a build takes 7 to 19 s on a busy 2-core machine.
const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn build_timeout() -> Result<std::time::Duration> {
    match std::env::var(BUILD_TIMEOUT_ENV) {
        Ok(secs) if !secs.is_empty() => secs
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs > 0)
            .map(std::time::Duration::from_secs)
            .with_context(|| format!("{BUILD_TIMEOUT_ENV} is `{secs}`, not a number of seconds")),
        _ => Ok(BUILD_TIMEOUT),
    }
}

/// The first 64 KiB of a log, as text (componentize-py's own output is small; a guest's
/// build-time prints are capped by componentize-py).
fn head(path: &Path) -> String {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    if let Ok(file) = fs::File::open(path) {
        let _ = file.take(64 << 10).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn python_path(dirs: &[&Path]) -> Vec<OsString> {
    dirs.iter()
        .flat_map(|dir| [OsString::from("--python-path"), dir.as_os_str().to_owned()])
        .collect()
}

/// Writes a 0400 file, making its directories (0700 until [`read_only`]).
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("create {}", parent.display()))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .with_context(|| format!("write {}", path.display()))
}

/// Makes the directories under `dir` (and it) 0500.
fn read_only(dir: &Path) -> Result<()> {
    set_dir_modes(dir, 0o500).with_context(|| format!("make {} read-only", dir.display()))
}

fn writable(dir: &Path) {
    let _ = set_dir_modes(dir, 0o700);
}

/// Sets the mode of `dir` and of every directory below it (both modes keep r-x, so the walk
/// works either way). Links are never followed.
fn set_dir_modes(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if !fs::symlink_metadata(dir)?.is_dir() {
        return Ok(());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_dir_modes(&entry.path(), mode)?;
        }
    }
    Ok(())
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
