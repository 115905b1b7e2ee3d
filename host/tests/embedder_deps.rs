//! What an embedder compiles: the library must not bring back the binary's argument parser and
//! log formatter, or the bench's progress bar and charts (they live in `cli/` and `bench/`).
//! Read from `cargo tree`, so a crate that comes back through any path is caught.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates that belong to the `sockbox` binary or the bench, never to the library.
const NOT_FOR_EMBEDDERS: &[&str] = &[
    "clap",
    "indicatif",
    "plotters",
    "tracing-subscriber",
    "mimalloc",
    "sockbox-cli",
    "sockbox-bench",
];

/// The crates `package` depends on to build (normal dependencies, this platform).
fn dependencies(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn not_for_embedders(dependencies: &BTreeSet<String>) -> Vec<&'static str> {
    NOT_FOR_EMBEDDERS
        .iter()
        .copied()
        .filter(|name| dependencies.contains(*name))
        .collect()
}

#[test]
fn the_library_pulls_no_cli_bench_or_chart_crate() {
    let library = dependencies("sockbox");
    assert!(
        library.contains("wasmtime"),
        "not the library's tree: {library:?}"
    );
    assert_eq!(not_for_embedders(&library), Vec::<&str>::new());
}

#[test]
fn the_binary_does_pull_them_so_the_check_sees_them() {
    // The tree lists its root too, so sockbox-cli is among them.
    let binary = dependencies("sockbox-cli");
    assert_eq!(not_for_embedders(&binary), NOT_FOR_EMBEDDERS);
}
