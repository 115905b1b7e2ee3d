//! The `sockbox up` manifest: which guests run, each with its component, arguments, restart
//! rule, instances and policy, and how restarts are paced.
//!
//! Every mistake is a load error naming `file:line`, found before anything runs: a manifest
//! that starts half its guests is worse than one that starts none. The check across guests
//! (no shared address) is in `sharing`.

mod sharing;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use toml::Spanned;

use super::backoff::RestartSettings;
use crate::policy::{LimitsSection, Policy, PolicySection, line_of, parse_millis, toml_error};
use crate::sandbox::{GuestSource, Transport};
use sharing::check_no_shared_address;

/// Most instances one guest may ask for (as `run --instances`).
pub(crate) const MAX_INSTANCES: usize = 256;

/// A parsed and checked manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The guests in file order.
    pub guests: Vec<GuestSpec>,
    /// `[supervisor]`: restart waits, the restart cap and the stop grace period.
    pub settings: RestartSettings,
    /// `[metrics] address`: where `/metrics`, `/healthz` and `/readyz` are served
    /// (`--metrics` overrides it).
    pub metrics: Option<SocketAddr>,
}

/// One `[guests.NAME]` table.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    /// The table's name: ready lines, logs and audit lines carry it.
    pub name: String,
    /// Where its component comes from.
    pub source: GuestSource,
    /// The component as written in the manifest, for `--check`.
    pub component: String,
    /// The guest's own arguments (`args = [...]`).
    pub args: Vec<String>,
    /// When it is started again after it ends.
    pub restart: Restart,
    /// How many instances share its addresses (Linux: `SO_REUSEPORT`).
    pub instances: usize,
    /// Its grants and limits, as a policy file writes them.
    pub policy: Policy,
    /// A file that gets this guest's decisions (besides `--audit`), resolved like `component`.
    pub audit: Option<PathBuf>,
    /// `file:line` of the table, for errors found later (a component that does not load).
    pub at: String,
    /// `file:line` of each `listen` then `udp` address.
    pub(super) address_lines: Vec<String>,
}

impl GuestSpec {
    /// The addresses it is granted, TCP first, in file order.
    pub fn addresses(&self) -> impl Iterator<Item = (Transport, SocketAddr)> + '_ {
        let tcp = self.policy.listen.iter().map(|a| (Transport::Tcp, *a));
        tcp.chain(self.policy.udp.iter().map(|a| (Transport::Udp, *a)))
    }

    /// One line for `up --check`: `echo component=echo tcp=127.0.0.1:7000 restart=never
    /// instances=1`.
    pub fn summary(&self) -> String {
        let mut line = format!("{} component={}", self.name, self.component);
        for (transport, addr) in self.addresses() {
            line.push_str(&format!(" {transport}={addr}"));
        }
        line.push_str(&format!(
            " restart={} instances={}",
            self.restart, self.instances
        ));
        line
    }
}

/// When a guest that ended is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Restart {
    /// Never: its ending is final.
    #[default]
    Never,
    /// After a trap, a non-zero exit or a kill.
    OnFailure,
    /// After any ending, a clean exit too.
    Always,
}

impl Restart {
    fn parse(text: &str) -> Result<Restart> {
        match text {
            "never" => Ok(Restart::Never),
            "on-failure" => Ok(Restart::OnFailure),
            "always" => Ok(Restart::Always),
            other => {
                bail!("restart must be \"never\", \"on-failure\" or \"always\", not {other:?}")
            }
        }
    }
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Restart::Never => "never",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        })
    }
}

impl Manifest {
    /// Reads and checks a manifest; relative paths in it are taken from its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Manifest::parse(&text, &path.display().to_string(), base)
    }

    /// Parses manifest TOML; `file_name` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, file_name: &str, base: &Path) -> Result<Manifest> {
        let at = |offset: usize| format!("{file_name}:{}", line_of(text, offset));
        let raw: RawManifest = toml::from_str(text).map_err(|e| toml_error(&e, text, file_name))?;

        let settings = match &raw.supervisor {
            Some(section) => parse_settings(section, &at)?,
            None => RestartSettings::default(),
        };

        let mut tables: Vec<_> = raw.guests.into_iter().collect();
        tables.sort_by_key(|(name, _)| name.span().start);
        if tables.is_empty() {
            bail!(
                "{file_name}: no guests; add a table such as\n  [guests.echo]\n  component = \"echo\"\n  listen = [\"127.0.0.1:7000\"]"
            );
        }
        let mut guests = Vec::with_capacity(tables.len());
        for (name, table) in tables {
            let table_at = at(name.span().start);
            let guest = parse_guest(name.into_inner(), table, &table_at, text, file_name, base)?;
            guests.push(guest);
        }
        check_no_shared_address(&guests)?;
        let metrics = match raw.metrics {
            Some(section) => Some(parse_metrics_address(section.address, &at)?),
            None => None,
        };
        Ok(Manifest {
            guests,
            settings,
            metrics,
        })
    }
}

fn parse_guest(
    name: String,
    table: RawGuest,
    table_at: &str,
    text: &str,
    file_name: &str,
    base: &Path,
) -> Result<GuestSpec> {
    let at = |offset: usize| format!("{file_name}:{}", line_of(text, offset));
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!(
            "{table_at}: guest name {name:?} must be letters, digits, `-`, `_` or `.` \
             (it is the third field of its ready lines)"
        );
    }
    let Some(component) = table.component else {
        bail!(
            "{table_at}: guest `{name}` has no component; add component = \"echo\" (a built-in) \
             or a path to a .wasm or .py file"
        );
    };
    let component_at = at(component.span().start);
    let component = component.into_inner();
    let source = match GuestSource::parse(&component) {
        GuestSource::Builtin(builtin) => {
            if crate::builtin::get(&builtin).is_none() {
                let err = crate::guest::unknown_builtin(&builtin);
                bail!("{component_at}: guest `{name}`: {err}");
            }
            GuestSource::Builtin(builtin)
        }
        GuestSource::File(path) => {
            let path = base.join(path);
            if !path.is_file() {
                bail!(
                    "{component_at}: guest `{name}`: component {} does not exist (relative \
                     paths are taken from the manifest's directory)",
                    path.display()
                );
            }
            GuestSource::File(path)
        }
        bytes @ GuestSource::Bytes { .. } => bytes,
    };
    let restart = match table.restart {
        Some(value) => Restart::parse(value.get_ref())
            .with_context(|| format!("{}: guest `{name}`", at(value.span().start)))
            .map_err(|e| anyhow!("{e:#}"))?,
        None => Restart::Never,
    };
    let instances = match table.instances {
        Some(value) => match value.get_ref() {
            toml::Value::Integer(n) if (1..=MAX_INSTANCES as i64).contains(n) => *n as usize,
            _ => bail!(
                "{}: guest `{name}`: instances must be a whole number from 1 to {MAX_INSTANCES}",
                at(value.span().start)
            ),
        },
        None => 1,
    };
    crate::sandbox::check_instances(instances)
        .map_err(|err| anyhow!("{table_at}: guest `{name}`: {err}"))?;
    // Where each address was written, for the duplicate check across guests.
    let lines: Vec<String> = (table.listen.iter())
        .chain(&table.udp)
        .map(|value| at(value.span().start))
        .collect();
    let section = PolicySection {
        listen: table.listen,
        udp: table.udp,
        allow: table.allow,
        dns_map: table.dns_map,
        limits: table.limits,
    };
    // Its errors already start with `file:line`.
    let policy = Policy::from_section(&section, text, file_name)
        .map_err(|e| anyhow!("{e:#} (guest `{name}`)"))?;
    let audit = table.audit.map(|path| base.join(path.into_inner()));
    Ok(GuestSpec {
        name,
        source,
        component,
        args: table.args,
        restart,
        instances,
        policy,
        audit,
        at: table_at.to_string(),
        address_lines: lines,
    })
}

fn parse_settings(raw: &RawSupervisor, at: &dyn Fn(usize) -> String) -> Result<RestartSettings> {
    let mut settings = RestartSettings::default();
    let millis = |value: &Spanned<toml::Value>, key: &str| -> Result<Duration> {
        let d = match value.get_ref() {
            toml::Value::Integer(n) if *n > 0 => Ok(Duration::from_millis(*n as u64)),
            toml::Value::String(s) => parse_millis(s),
            _ => Err(anyhow!(
                "expected milliseconds or a duration, e.g. 100, \"100ms\" or \"5s\""
            )),
        };
        d.with_context(|| format!("{}: {key}", at(value.span().start)))
            .map_err(|e| anyhow!("{e:#}"))
    };
    if let Some(v) = &raw.restart_delay {
        settings.first_delay = millis(v, "restart-delay")?;
    }
    if let Some(v) = &raw.max_restart_delay {
        settings.max_delay = millis(v, "max-restart-delay")?;
    }
    if let Some(v) = &raw.stable_after {
        settings.stable_after = millis(v, "stable-after")?;
    }
    if let Some(v) = &raw.restart_window {
        settings.window = millis(v, "restart-window")?;
    }
    if let Some(v) = &raw.stop_grace {
        settings.grace = millis(v, "stop-grace")?;
    }
    if let Some(v) = &raw.max_restarts {
        settings.max_restarts = match v.get_ref() {
            toml::Value::Integer(n) if (0..=u32::MAX as i64).contains(n) => *n as u32,
            _ => bail!(
                "{}: max-restarts must be a whole number (0 gives a guest up at its first ending)",
                at(v.span().start)
            ),
        };
    }
    if settings.max_delay < settings.first_delay {
        let key = (raw.max_restart_delay.as_ref()).or(raw.restart_delay.as_ref());
        bail!(
            "{}: max-restart-delay ({:?}) is shorter than restart-delay ({:?})",
            at(key.map_or(0, |v| v.span().start)),
            settings.max_delay,
            settings.first_delay
        );
    }
    Ok(settings)
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    guests: BTreeMap<Spanned<String>, RawGuest>,
    supervisor: Option<RawSupervisor>,
    metrics: Option<RawMetrics>,
}

/// `[metrics]`: the listener of `/metrics`, `/healthz` and `/readyz`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    address: Spanned<String>,
}

/// `[metrics] address = "IP:PORT"`.
fn parse_metrics_address(
    address: Spanned<String>,
    at: &dyn Fn(usize) -> String,
) -> Result<SocketAddr> {
    let line = at(address.span().start);
    address.get_ref().parse().map_err(|_| {
        anyhow::anyhow!(
            "{line}: [metrics] address must be IP:PORT (such as \"127.0.0.1:9100\"), not {:?}",
            address.get_ref()
        )
    })
}

/// A guest table: its own keys, then the policy vocabulary (handed to `Policy::from_section`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGuest {
    component: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
    restart: Option<Spanned<String>>,
    instances: Option<Spanned<toml::Value>>,
    audit: Option<Spanned<String>>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    udp: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    dns_map: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    limits: Option<LimitsSection>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSupervisor {
    restart_delay: Option<Spanned<toml::Value>>,
    max_restart_delay: Option<Spanned<toml::Value>>,
    stable_after: Option<Spanned<toml::Value>>,
    max_restarts: Option<Spanned<toml::Value>>,
    restart_window: Option<Spanned<toml::Value>>,
    stop_grace: Option<Spanned<toml::Value>>,
}

#[cfg(test)]
mod tests;
