//! What a bench run measures and for how long: `sockbox bench`'s flags as one value, checked
//! before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::figures;
use crate::load::Phases;
use crate::world::Worlds;

/// Connections held open for `open-10k-s` and `idle-conn-kib` (fewer with `--quick`).
pub const IDLE_CONNECTIONS: usize = 10_000;

/// Connections of `--quick`: a guest's accept path slows down as it holds more connections,
/// and 10 000 take it minutes, not seconds.
pub const QUICK_CONNECTIONS: usize = 2_000;

/// What to run and how long.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Interleaved rounds; the report gives their median and spread.
    pub rounds: usize,
    pub phases: Phases,
    /// The short variant (reported as such).
    pub quick: bool,
    /// Only these figures (all when empty).
    pub only: Vec<String>,
    /// The worlds whose built-in guests run (`--world`).
    pub worlds: Worlds,
    /// A component file in place of a built-in guest, by guest name; it runs once, in its
    /// own world, whatever `worlds` says.
    pub components: BTreeMap<String, PathBuf>,
    /// Connections opened for `open-10k-s` and `idle-conn-kib`.
    pub connections: usize,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Start each guest with `--metrics 127.0.0.1:0`, to measure what counting costs.
    pub guest_metrics: bool,
}

impl BenchOptions {
    /// 5 rounds of 0.5 s warm-up and 2 s measurement per figure and server.
    pub fn standard() -> BenchOptions {
        BenchOptions {
            rounds: 5,
            phases: Phases {
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
            },
            quick: false,
            only: Vec::new(),
            worlds: Worlds::P2,
            components: BTreeMap::new(),
            connections: IDLE_CONNECTIONS,
            progress: true,
            guest_metrics: false,
        }
    }

    /// 3 rounds of 50 ms warm-up and 200 ms measurement, 2 000 connections instead of
    /// 10 000: under a minute on 2 cores.
    pub fn quick() -> BenchOptions {
        BenchOptions {
            rounds: 3,
            phases: Phases {
                warmup: Duration::from_millis(50),
                measure: Duration::from_millis(200),
            },
            quick: true,
            connections: QUICK_CONNECTIONS,
            ..BenchOptions::standard()
        }
    }

    /// Measures for `measure` per figure and server, after a quarter of that as warm-up.
    pub fn measuring(mut self, measure: Duration) -> BenchOptions {
        self.phases = Phases {
            warmup: measure / 4,
            measure,
        };
        self
    }

    /// Unknown figure or guest names, missing files, zero rounds: said before anything runs.
    pub fn check(&self) -> Result<()> {
        let known: Vec<_> = figures::names().collect();
        for name in &self.only {
            if !known.contains(&name.as_str()) {
                bail!("no figure named `{name}` (figures: {})", known.join(", "));
            }
        }
        let guests = figures::guests();
        for (name, path) in &self.components {
            if !guests.contains(&name.as_str()) {
                bail!(
                    "--component {name}=...: no figure runs a guest named `{name}` (guests: {})",
                    guests.join(", ")
                );
            }
            if !path.is_file() {
                bail!("--component {name}={}: no such file", path.display());
            }
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if self.phases.measure.is_zero() {
            bail!("--duration-ms must be at least 1");
        }
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        Ok(())
    }

    pub(crate) fn wants(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|name| name == figure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to the quick options.
    type Change = fn(&mut BenchOptions);

    #[test]
    fn each_bad_option_is_named_before_anything_runs() {
        // The case, the change, and what the error names (None: accepted).
        let cases: &[(&str, Change, Option<&str>)] = &[
            ("standard", |_| {}, None),
            ("known figure", |o| o.only = vec!["tcp-rr-1".into()], None),
            (
                "unknown figure",
                |o| o.only = vec!["tcp-rr-2".into()],
                Some("tcp-rr-2"),
            ),
            ("no rounds", |o| o.rounds = 0, Some("--rounds")),
            (
                "no time",
                |o| *o = o.clone().measuring(Duration::ZERO),
                Some("--duration-ms"),
            ),
            (
                "no connections",
                |o| o.connections = 0,
                Some("--connections"),
            ),
            (
                "unknown guest",
                |o| o.components = BTreeMap::from([("nope".into(), PathBuf::from("Cargo.toml"))]),
                Some("`nope`"),
            ),
            (
                "missing file",
                |o| o.components = BTreeMap::from([("echo".into(), PathBuf::from("no/such.wasm"))]),
                Some("no such file"),
            ),
        ];
        for (case, change, error) in cases {
            let mut options = BenchOptions::quick();
            change(&mut options);
            match (options.check(), error) {
                (Ok(()), None) => {}
                (Err(err), Some(text)) => assert!(err.to_string().contains(text), "{case}: {err}"),
                (result, _) => panic!("{case}: {result:?}"),
            }
        }
    }

    #[test]
    fn only_narrows_the_figures() {
        let mut options = BenchOptions::standard();
        assert!(options.wants("tcp-bulk"));
        options.only = vec!["udp-echo".into()];
        assert!(options.wants("udp-echo") && !options.wants("tcp-bulk"));
    }
}
