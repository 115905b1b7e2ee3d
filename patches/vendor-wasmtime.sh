#!/usr/bin/env bash
# Recreates vendor/wasmtime-50.0.1: the crate as published on crates.io with
# wasmtime-50.0.1-fair-waitable-set.diff applied (the workspace's [patch.crates-io] points at it).
# Run after `cargo fetch` on a checkout whose Cargo.toml names crates.io's wasmtime (comment out
# the [patch.crates-io] line first, or the registry copy is never fetched). When wasmtime is
# upgraded: re-vendor the new version, re-apply the diff, or drop both once upstream has the fix.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=${1:-50.0.1}
registry=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/index.crates.io-*/wasmtime-"$version" | head -1)
vendor=$root/vendor/wasmtime-$version
rm -rf "$vendor" && mkdir -p "$root/vendor" && cp -r "$registry" "$vendor"
rm -f "$vendor/Cargo.toml.orig"
patch -d "$vendor" -p1 --no-backup-if-mismatch <"$root/patches/wasmtime-$version-fair-waitable-set.diff"
echo "vendored wasmtime $version with the fairness patch into ${vendor#"$root"/}"
