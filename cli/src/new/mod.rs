//! `sockbox new`: scaffold a guest — a line server — either as a crate on the SDK (with a unit
//! test) that builds with `cargo build --release --target wasm32-wasip2`, or as a Python script
//! on `sockbox_guest` that `sockbox run NAME.py` builds and runs.
//!
//! The Rust SDK travels inside this binary, as the Python package does: `sockbox new` writes it
//! into the crate (`vendor/sockbox`, with the guests' Cargo.lock), so the crate builds wherever
//! the binary is — from a release, a container or another clone — against the SDK of the sockbox
//! that made it, with no path into the machine that built sockbox.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::Failure;
use vendor::{VENDOR, embedded, vendored_sdk};

mod vendor;

#[derive(Args, Debug)]
pub(crate) struct NewArgs {
    /// The guest's name: the crate (Rust) or the module (Python), the directory and the .wasm
    /// file name.
    name: String,
    /// The language of the guest.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create it (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Depend on this guest SDK (`guests/sdk` of a sockbox checkout, for SDK developers)
    /// instead of writing the one built into this binary into NAME/vendor/sockbox.
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
}

pub(crate) fn new(args: NewArgs) -> Result<u8, Failure> {
    if args.lang == Lang::Python {
        return new_python(&args);
    }
    scaffold(&args).map_err(Failure::usage)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    eprintln!("created guest `{}` in {}", args.name, dir.display());
    if args.sdk.is_none() {
        eprintln!(
            "with the guest SDK of sockbox {} in {}",
            env!("CARGO_PKG_VERSION"),
            dir.join(VENDOR).display()
        );
    }
    eprintln!(
        "\n  cd {dir}\n  cargo test                                   # unit tests, native\n  cargo build --release --target wasm32-wasip2\n  sockbox run target/wasm32-wasip2/release/{name}.wasm --listen 127.0.0.1:7000",
        name = args.name,
        dir = dir.display()
    );
    Ok(0)
}

fn scaffold(args: &NewArgs) -> Result<()> {
    let name = &args.name;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        bail!(
            "`{name}` is not a good crate name: use lowercase letters, digits, - and _, starting with a letter"
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; nothing was written",
            dir.display()
        );
    }
    // Everything is prepared before anything is written.
    let (sdk_dependency, vendored) = match &args.sdk {
        Some(sdk) => {
            let sdk = sdk
                .canonicalize()
                .with_context(|| format!("the guest SDK is not at {} (--sdk)", sdk.display()))?;
            if !sdk.join("Cargo.toml").exists() {
                bail!(
                    "{} is not the guest SDK (no Cargo.toml); --sdk takes guests/sdk of a \
                     sockbox checkout",
                    sdk.display()
                );
            }
            let dep = format!(
                "# The guest SDK of a sockbox checkout (`sockbox new --sdk`).\n\
                 sockbox-guest = {{ path = {:?} }}",
                sdk.display().to_string()
            );
            (dep, Vec::new())
        }
        None => {
            let dep = format!(
                "# The guest SDK of the sockbox that wrote this crate: {VENDOR}/README.md.\n\
                 sockbox-guest = {{ path = \"{VENDOR}/guests/sdk\" }}"
            );
            (dep, vendored_sdk(embedded::SDK_FILES)?)
        }
    };
    fs::create_dir_all(dir.join("src")).with_context(|| format!("create {}", dir.display()))?;
    for (path, text) in &vendored {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        write(&path, text)?;
    }
    write(&dir.join("Cargo.toml"), &cargo_toml(name, &sdk_dependency))?;
    write(&dir.join("src/main.rs"), &main_rs(name))?;
    write(&dir.join("rust-toolchain.toml"), RUST_TOOLCHAIN)?;
    write(&dir.join(".gitignore"), "/target\n")?;
    Ok(())
}

fn new_python(args: &NewArgs) -> Result<u8, Failure> {
    let (dir, script) = scaffold_python(args).map_err(Failure::usage)?;
    eprintln!(
        "created Python guest `{name}` in {dir}\n\n\
         Once, if componentize-py is not installed:\n  \
         python3 -m pip install componentize-py=={version}\n\
         Run it; test it end to end over loopback; build a component file to ship:\n  \
         sockbox run {script} --listen 127.0.0.1:7000\n  \
         python3 -m unittest discover {dir}\n  \
         sockbox build {script} -o {name}.wasm",
        name = args.name,
        dir = dir.display(),
        script = script.display(),
        version = sockbox::python::COMPONENTIZE_PY_VERSION,
    );
    Ok(0)
}

/// Writes `DIR/NAME.py`; returns the directory and the script's path.
fn scaffold_python(args: &NewArgs) -> Result<(PathBuf, PathBuf)> {
    let name = &args.name;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a good Python module name: use lowercase letters, digits and _, \
             starting with a letter"
        );
    }
    if args.sdk.is_some() {
        bail!("--sdk is for Rust guests; a Python guest's support package is built into sockbox");
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; nothing was written (a Python guest gets a directory \
             of its own: all of it goes into the component)",
            dir.display()
        );
    }
    let script = dir.join(format!("{name}.py"));
    // Checked before anything is written: `time.py` would hide Python's `time` module.
    if let Err(err) = sockbox::python::is_guest_name(name) {
        bail!("{err}");
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    write(&script, &main_py(name))?;
    write(&dir.join(format!("test_{name}.py")), &test_py(name))?;
    write(&dir.join(".gitignore"), "__pycache__/\n*.wasm\n")?;
    Ok((dir, script))
}

fn main_py(name: &str) -> String {
    format!(
        r#""""{name}: a sockbox guest. Every line a client sends is answered with `hello, <line>`.

Run:   sockbox run {name}.py --listen 127.0.0.1:7000
Build: sockbox build {name}.py -o {name}.wasm
"""

from sockbox_guest import Guest, start_server


def reply(line):
    """The protocol, as a plain function: easy to change and to test without sockets."""
    return f"hello, {{line}}\n"


async def greet(reader, writer):
    async for line in reader:
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        writer.write(reply(text).encode())
        await writer.drain()


class Run(Guest):
    async def main(self):
        # asyncio's start_server: with no host and port, every --listen address.
        # serve_forever says ready, serves each client as its own task, and returns when
        # the host asks the guest to stop.
        server = await start_server(greet)
        async with server:
            await server.serve_forever()
"#
    )
}

fn test_py(name: &str) -> String {
    format!(
        r#""""End-to-end test of {name}: runs it under sockbox and talks to it over loopback.

    python3 -m unittest discover .     (sockbox and componentize-py on PATH, or SOCKBOX=path)
"""

import os
import socket
import subprocess
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class {class}Test(unittest.TestCase):
    def setUp(self):
        sockbox = os.environ.get("SOCKBOX", "sockbox")
        script = os.path.join(HERE, "{name}.py")
        # Port 0: the host picks a free port and says which on its `ready` line.
        self.server = subprocess.Popen(
            [sockbox, "run", script, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self.server.stdout.readline()  # "ready tcp 127.0.0.1:PORT"
        self.assertTrue(ready.startswith("ready tcp "), f"no ready line: {{ready!r}}")
        host, port = ready.split()[2].rsplit(":", 1)
        self.address = (host, int(port))

    def tearDown(self):
        self.server.terminate()  # SIGTERM: the guest is asked to stop and exits cleanly
        self.assertEqual(self.server.wait(timeout=30), 0)
        self.server.stdout.close()

    def test_greets_each_line(self):
        with socket.create_connection(self.address, timeout=30) as conn:
            conn.sendall(b"world\nand you\n")
            replies = conn.makefile("rb")
            self.assertEqual(replies.readline(), b"hello, world\n")
            self.assertEqual(replies.readline(), b"hello, and you\n")


if __name__ == "__main__":
    unittest.main()
"#,
        class = name
            .split('_')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn cargo_toml(name: &str, sdk_dependency: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
{sdk_dependency}

# Small, fast components; the same settings as sockbox's own guests.
[profile.release]
opt-level = "s"
debug = false
strip = "debuginfo"
codegen-units = 4

# A guest is its own workspace; the SDK in vendor/ is a dependency, not a member.
[workspace]
exclude = ["vendor"]
"#
    )
}

fn main_rs(name: &str) -> String {
    format!(
        r#"//! {name}: a sockbox guest. Every line a client sends is answered with `hello, <line>`.
//!
//! Build: `cargo build --release --target wasm32-wasip2`
//! Run:   `sockbox run target/wasm32-wasip2/release/{name}.wasm --listen 127.0.0.1:7000`

use std::process::ExitCode;

use sockbox_guest::lines::LineReader;
use sockbox_guest::net::TcpStream;
use sockbox_guest::serve::serve_tcp;

fn main() -> ExitCode {{
    // Listens on every --listen address, serves each client in its own task, stops on shutdown.
    sockbox_guest::run(serve_tcp(|stream: TcpStream, _peer| async move {{
        let (reader, writer) = stream.split();
        let mut lines = LineReader::new(reader);
        while let Some(line) = lines.next_line().await? {{
            writer.write_all(reply(&line).as_bytes()).await?;
        }}
        Ok(())
    }}))
}}

/// The protocol, as a pure function: easy to test without sockets.
fn reply(line: &str) -> String {{
    format!("hello, {{line}}\n")
}}

#[cfg(test)]
mod tests {{
    #[test]
    fn greets_each_line() {{
        assert_eq!(super::reply("world"), "hello, world\n");
    }}
}}
"#
    )
}

const RUST_TOOLCHAIN: &str = r#"[toolchain]
channel = "1.99.1"
targets = ["wasm32-wasip2"]
"#;
