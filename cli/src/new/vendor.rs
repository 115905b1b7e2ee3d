//! The guest SDK a Rust scaffold gets: the files built into this binary (`build.rs`), laid out
//! under [`VENDOR`] as in the sockbox repository, with every manifest made standalone (the
//! workspace settings it inherits written out), so the crate builds with no sockbox checkout.

use std::path::Path;

use anyhow::{Context, Result, bail};
use toml::{Table, Value};

pub(super) mod embedded {
    include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));
}

/// Where a scaffold keeps the SDK it was given. The tree mirrors the repository's layout, so the
/// SDK's own relative paths (`../../wire`, the WIT at `../../wit`) hold unchanged.
pub(super) const VENDOR: &str = "vendor/sockbox";

/// The files that give a scaffold the SDK built into this binary, by path in the scaffold: the
/// SDK, `sockbox-wire` and the WIT under [`VENDOR`], their manifests made standalone, the
/// guests' Cargo.lock as the crate's own (cargo keeps the versions the SDK was tested with and
/// drops the rest), and a README saying what the directory is.
pub(super) fn vendored_sdk(embedded: &[(&str, &str)]) -> Result<Vec<(String, String)>> {
    let mut files = vec![(
        format!("{VENDOR}/README.md"),
        format!(
            "The guest SDK (`sockbox-guest`), the wire formats it uses (`sockbox-wire`) and the WIT \
             world of sockbox {version}, written here by `sockbox new`. Your crate builds against \
             them, and its Cargo.lock started from the versions sockbox tested them with.\n\n\
             The layout is the sockbox repository's (the SDK finds `../../wire` and `../../wit`); \
             the manifests have the repository's workspace settings written out. To move to the \
             SDK of another sockbox, run its `sockbox new` into an empty directory and copy its \
             `{VENDOR}` over this one.\n",
            version = env!("CARGO_PKG_VERSION"),
        ),
    )];
    for &(path, text) in embedded {
        let text = match path {
            // The workspaces the manifests inherit from: written out into them below.
            "Cargo.toml" | "guests/Cargo.toml" => continue,
            "guests/Cargo.lock" => {
                files.push(("Cargo.lock".to_string(), text.to_string()));
                continue;
            }
            manifest if manifest.ends_with("/Cargo.toml") => {
                standalone_manifest(manifest, text, embedded)?
            }
            _ => text.to_string(),
        };
        files.push((format!("{VENDOR}/{path}"), text));
    }
    Ok(files)
}

/// The manifest at `path` (in the repository) with every `workspace = true` replaced by what its
/// workspace (the nearest above it among `embedded`) says, so it builds outside that workspace.
fn standalone_manifest(path: &str, text: &str, embedded: &[(&str, &str)]) -> Result<String> {
    let context = || format!("the embedded {path}");
    let mut manifest: Table = text.parse().with_context(context)?;
    let (workspace_dir, workspace) = workspace_of(path, embedded).with_context(context)?;
    let depth = Path::new(path)
        .parent()
        .and_then(|dir| dir.strip_prefix(workspace_dir).ok())
        .map_or(0, |below| below.components().count());

    let inherited = |section: &str, key: &str| {
        workspace
            .get(section)
            .and_then(|table| table.get(key))
            .cloned()
            .with_context(|| format!("{path} inherits {section}.{key}; its workspace has none"))
    };
    if let Some(Value::Table(package)) = manifest.get_mut("package") {
        for (key, value) in package.iter_mut() {
            if inherits(value) {
                *value = inherited("package", key)?;
            }
        }
    }
    if manifest.get("lints").is_some_and(inherits) {
        let lints = workspace
            .get("lints")
            .cloned()
            .with_context(|| format!("{path} inherits lints; its workspace has none"))?;
        manifest.insert("lints".into(), lints);
    }
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(Value::Table(deps)) = manifest.get_mut(section) else {
            continue;
        };
        for (name, dep) in deps.iter_mut() {
            if !inherits(dep) {
                continue;
            }
            let Value::Table(local) = dep else { continue };
            let mut resolved = match inherited("dependencies", name)? {
                Value::String(version) => Table::from_iter([("version".into(), version.into())]),
                Value::Table(table) => table,
                other => bail!("{path}: workspace dependency {name} is {other}"),
            };
            // A workspace path is relative to the workspace; the member is `depth` levels below.
            if let Some(Value::String(dep_path)) = resolved.get_mut("path") {
                *dep_path = format!("{}{dep_path}", "../".repeat(depth));
            }
            for (key, value) in local.iter() {
                match (key.as_str(), resolved.get_mut(key), value) {
                    ("workspace", ..) => {}
                    ("features", Some(Value::Array(all)), Value::Array(more)) => {
                        all.extend(more.iter().cloned())
                    }
                    _ => {
                        resolved.insert(key.clone(), value.clone());
                    }
                }
            }
            *dep = Value::Table(resolved);
        }
    }
    if manifest
        .iter()
        .any(|(key, value)| key == "workspace" || mentions_workspace(value))
    {
        bail!("{path}: a `workspace` key sockbox new cannot write out");
    }

    // [package] first, as people write it; the rest in toml's (sorted) order.
    let mut out = format!(
        "# {path} of sockbox {}, with its workspace's settings written out by `sockbox new`.\n\n",
        env!("CARGO_PKG_VERSION")
    );
    let package = manifest.remove("package");
    if let Some(package) = package {
        out += &toml::to_string(&Table::from_iter([("package".to_string(), package)]))?;
        out += "\n";
    }
    out += &toml::to_string(&manifest)?;
    Ok(out)
}

/// `{ workspace = true, ... }`: the value comes from the workspace.
fn inherits(value: &Value) -> bool {
    value.get("workspace").and_then(Value::as_bool) == Some(true)
}

fn mentions_workspace(value: &Value) -> bool {
    match value {
        Value::Table(table) => table
            .iter()
            .any(|(key, value)| key == "workspace" || mentions_workspace(value)),
        Value::Array(items) => items.iter().any(mentions_workspace),
        _ => false,
    }
}

/// The nearest embedded manifest above `path` that declares a workspace: its directory and its
/// `[workspace]` table.
fn workspace_of<'a>(path: &str, embedded: &[(&'a str, &str)]) -> Result<(&'a str, Table)> {
    let mut dir = Path::new(path).parent();
    while let Some(above) = dir.and_then(Path::parent) {
        let candidate = above.join("Cargo.toml");
        if let Some(&(manifest_path, text)) =
            embedded.iter().find(|(p, _)| Path::new(p) == candidate)
        {
            let mut manifest: Table = text
                .parse()
                .with_context(|| format!("the embedded {manifest_path}"))?;
            if let Some(Value::Table(workspace)) = manifest.remove("workspace") {
                let dir = manifest_path.strip_suffix("Cargo.toml").unwrap_or_default();
                return Ok((dir.trim_end_matches('/'), workspace));
            }
        }
        dir = Some(above);
    }
    bail!("no embedded workspace above {path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the scaffold gets is there, every manifest builds outside sockbox's
    /// workspaces, and nothing names the machine that built this binary.
    #[test]
    fn the_embedded_sdk_is_complete_and_standalone() {
        let files = vendored_sdk(embedded::SDK_FILES).unwrap();
        let get = |path: &str| {
            files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, text)| text.as_str())
                .unwrap_or_else(|| panic!("the scaffold gets no {path}"))
        };
        for path in [
            "Cargo.lock",
            "vendor/sockbox/README.md",
            "vendor/sockbox/guests/sdk/src/lib.rs",
            "vendor/sockbox/guests/sdk/src/control.rs",
            "vendor/sockbox/wire/src/lib.rs",
            "vendor/sockbox/wit/world.wit",
            "vendor/sockbox/wit/deps/sockets.wit",
        ] {
            assert!(!get(path).is_empty(), "{path}");
        }
        let guests: Table = include_str!("../../../guests/Cargo.toml").parse().unwrap();
        let sdk: Table = get("vendor/sockbox/guests/sdk/Cargo.toml").parse().unwrap();
        assert_eq!(sdk["package"]["name"].as_str(), Some("sockbox-guest"));
        assert_eq!(sdk["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(
            sdk["dependencies"]["wit-bindgen"]["version"],
            guests["workspace"]["dependencies"]["wit-bindgen"]
        );
        assert_eq!(
            sdk["dependencies"]["sockbox-wire"]["path"].as_str(),
            Some("../../wire")
        );
        let wire: Table = get("vendor/sockbox/wire/Cargo.toml").parse().unwrap();
        assert_eq!(wire["package"]["publish"].as_bool(), Some(false));

        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for (path, text) in &files {
            assert!(!text.contains("workspace = true"), "{path}");
            assert!(!text.contains(checkout.to_str().unwrap()), "{path}");
        }
    }

    #[test]
    fn workspace_settings_are_written_out() {
        let embedded = [
            (
                "ws/Cargo.toml",
                r#"
[workspace.package]
edition = "2024"
[workspace.dependencies]
plain = "1"
tuned = { version = "2", features = ["a"] }
local = { path = "lib" }
"#,
            ),
            (
                "ws/crates/member/Cargo.toml",
                r#"
[package]
name = "member"
edition.workspace = true
[dependencies]
plain.workspace = true
tuned = { workspace = true, features = ["b"], optional = true }
local.workspace = true
own = "3"
"#,
            ),
        ];
        let (path, text) = embedded[1];
        let out: Table = standalone_manifest(path, text, &embedded)
            .unwrap()
            .parse()
            .unwrap();
        let deps = &out["dependencies"];
        assert_eq!(out["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(deps["plain"]["version"].as_str(), Some("1"));
        assert_eq!(
            deps["tuned"]["features"].as_array().unwrap(),
            &vec![Value::from("a"), Value::from("b")]
        );
        assert_eq!(deps["tuned"]["optional"].as_bool(), Some(true));
        assert_eq!(deps["local"]["path"].as_str(), Some("../../lib"));
        assert_eq!(deps["own"].as_str(), Some("3"));

        let orphan = "[package]\nname = \"x\"\nlicense.workspace = true\n";
        let err =
            standalone_manifest("ws/crates/member/Cargo.toml", orphan, &embedded).unwrap_err();
        assert!(
            format!("{err:#}").contains("inherits package.license"),
            "{err:#}"
        );
    }
}
