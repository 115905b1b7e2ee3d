#!/usr/bin/env bash
# Builds p3-runner twice: on stock wasmtime 50.0.1 (target/release/p3-runner-stock) and on a
# vendored copy with patches/wasmtime-50.0.1-fair-waitable-set.diff applied through
# `[patch.crates-io]` (target/release/p3-runner-fair). The patched build happens in a scratch
# copy under target/ so this crate's Cargo.toml and Cargo.lock stay on crates.io's wasmtime.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=$root/target

nice -n 19 cargo build --release --manifest-path "$here/Cargo.toml"
cp "$root/target/release/p3-runner" "$root/target/release/p3-runner-stock"

registry=$(ls -d "$HOME"/.cargo/registry/src/index.crates.io-*/wasmtime-50.0.1 | head -1)
vendor=$root/target/vendor/wasmtime-50.0.1
rm -rf "$vendor" && mkdir -p "$(dirname "$vendor")" && cp -r "$registry" "$vendor"
patch -d "$vendor" -p1 <"$root/patches/wasmtime-50.0.1-fair-waitable-set.diff"

scratch=$root/target/p3-runner-fair
rm -rf "$scratch" && mkdir -p "$scratch"
cp "$here/Cargo.toml" "$here/Cargo.lock" "$scratch/" && ln -s "$here/src" "$scratch/src"
printf '\n[patch.crates-io]\nwasmtime = { path = "%s" }\n' "$vendor" >>"$scratch/Cargo.toml"
nice -n 19 cargo build --release --manifest-path "$scratch/Cargo.toml"
cp "$root/target/release/p3-runner" "$root/target/release/p3-runner-fair"
