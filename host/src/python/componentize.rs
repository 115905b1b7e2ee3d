//! Running componentize-py: finding the tool, and building a component from a private,
//! read-only copy of the guest's sources under a time limit. The guest's top-level code runs
//! during the build, so the build is treated as running untrusted code.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::sources::Sources;
use super::{COMPONENTIZE_PY_VERSION, SUPPORT, WIT, WORLD};

/// `SOCKBOX_COMPONENTIZE_PY`, else `componentize-py` on `PATH`.
pub(super) fn componentize_py() -> Result<PathBuf> {
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

pub(super) fn tool_version(tool: &Path) -> Result<String> {
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

/// Runs componentize-py on a private copy of the guest's sources.
///
/// componentize-py runs the module's top-level code at build time (pre-initialisation), in
/// wasmtime, with every `--python-path` directory (and a virtual environment's site-packages)
/// preopened read-write, environment variables of its own and no network. So it is handed
/// only a fresh directory (0700, removed after) holding read-only copies of the guest's Python
/// files and of the support package, and `VIRTUAL_ENV` names an empty environment there, so
/// no site-packages of the host (whose `.pth` files run at every Python start) is reachable.
/// The WIT package and the output are in the same directory, not preopened.
pub(super) fn build(tool: &Path, module: &str, sources: &Sources) -> Result<Vec<u8>> {
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

/// Environment variable: seconds a Python build may take (default 600).
const BUILD_TIMEOUT_ENV: &str = "SOCKBOX_BUILD_TIMEOUT";

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
