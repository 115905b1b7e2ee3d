//! Python tools from PyPI (componentize-py, the deploy checks), pinned, each in a virtual
//! environment under the target dir: made on first use, reused after, so nothing is installed
//! by hand. Without python3 the tests that need one fail and say so; they never skip.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

/// The virtual environment `target/tmp/<name>` holding `requirements` (`pkg==version`); made
/// once, shared by every test process. `probe` (a file under it, e.g. `bin/tool`) tells that
/// the install finished.
pub(crate) fn pinned(name: &str, requirements: &[&str], probe: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&venv).unwrap();
    // Another test process (nextest) may be installing it: one at a time.
    let lock = File::create(venv.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if !venv.join(probe).is_file() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let made = Command::new(&python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .output()
            .unwrap_or_else(|e| panic!("{name} needs {python} (3.9+ with venv and pip): {e}"));
        assert!(
            made.status.success(),
            "{python} -m venv failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let pip = Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(requirements)
            .output()
            .expect("run pip");
        assert!(
            pip.status.success(),
            "installing {requirements:?} from PyPI failed: {}",
            String::from_utf8_lossy(&pip.stderr)
        );
    }
    assert!(venv.join(probe).is_file(), "{probe} was not installed");
    venv
}
