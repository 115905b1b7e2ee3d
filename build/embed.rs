//! Embedding files as text in a binary, shared by the build scripts of `host/` (the Python
//! support package) and `cli/` (the guest SDK for `sockbox new`): one copy, included by path.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// One `("relative/path", include_str!("/absolute/path")),` line per file: the text is embedded
/// under its path relative to `base` ('/'-separated), the absolute path read at compile time only.
pub fn text_entries(base: &Path, files: &[PathBuf]) -> String {
    let mut code = String::new();
    for file in files {
        let relative: Vec<_> = file
            .strip_prefix(base)
            .unwrap()
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_str()
                    .expect("a UTF-8 path in an embedded file")
            })
            .collect();
        writeln!(
            code,
            "    ({:?}, include_str!({:?})),",
            relative.join("/"),
            file.display()
        )
        .unwrap();
    }
    code
}

/// Every file under `dir`, skipping hidden ones (editor and VCS leftovers).
pub fn tree_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            tree_files(&path, files);
        } else {
            files.push(path);
        }
    }
}
