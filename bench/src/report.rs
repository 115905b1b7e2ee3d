//! The bench's results as data ([`Report`], serialised as the contract's JSON) and as text: a
//! terminal table and a markdown page. Every form says what was measured on what and what a
//! ratio means, so a figure is never read without its context.

use std::collections::BTreeMap;

use serde::Serialize;

use super::figures::{FigureDef, Job, NATIVES, Workload};
use super::stats::{self, Better};
use super::world::World;
use super::{BenchOptions, IDLE_CONNECTIONS, Machine, NativeKind, Tally};

/// How to read `ratio`, in every output.
pub const RATIO_MEANS: &str = "ratio = guest/native when higher is better, native/guest when \
    lower is better: >= 1 means the guest is as good as native or better";

/// Which native a ratio is taken against, in every output.
pub const NATIVE_MEANS: &str = "native = the better of native-evloop (one thread, tokio) and \
    native-threads (a thread per connection) in each round";

/// Everything one bench run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub rounds: usize,
    pub warmup_ms: u64,
    pub measure_ms: u64,
    /// The worlds asked for with `--world` (a `--component` file runs in its own).
    pub worlds: Vec<World>,
    pub ratio_means: &'static str,
    pub native_means: &'static str,
    pub figures: Vec<FigureReport>,
    /// Figures that were asked for but could not run here, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    /// The world it could not run in; absent when it could run in none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world: Option<World>,
    pub reason: String,
}

/// One figure in one world: medians over the rounds, their spread, and the ratio.
#[derive(Clone, Debug, Serialize)]
pub struct FigureReport {
    pub name: String,
    pub unit: String,
    pub better: Better,
    /// The guest's WASI: `p2` or `p3`.
    pub world: World,
    pub guest: Option<f64>,
    /// The median over the rounds of the better native in each round.
    pub native: Option<f64>,
    pub ratio: Option<f64>,
    /// The native that did better in most rounds (`baseline_rounds`: in how many each did).
    pub baseline: String,
    pub baseline_rounds: BTreeMap<String, usize>,
    /// The guest component (built-in name or path) and its extra `sockbox run` options.
    pub guest_component: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    /// Each native's own median, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_evloop: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_threads: Option<f64>,
    /// Smallest and largest of the rounds.
    pub spread: BySide<Option<[f64; 2]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<BySide<Option<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<BySide<Option<f64>>>,
    /// Rounds that produced a value.
    pub samples: BySide<usize>,
    /// Connections, clients or servers that failed, summed over the rounds (`native`: both
    /// natives').
    pub failed: BySide<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A value for the guest, the better native of each round, and each native on its own.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BySide<T> {
    pub guest: T,
    pub native: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_evloop: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_threads: Option<T>,
}

/// The better native's result in each round (by `better`), and how often each native was it.
fn stronger(
    better: Better,
    evloop: Option<&Tally>,
    threads: Option<&Tally>,
) -> (Tally, BTreeMap<String, usize>) {
    let natives = [evloop, threads];
    let mut rounds: Vec<usize> = natives
        .iter()
        .flatten()
        .flat_map(|t| t.rounds.iter().map(|r| r.round))
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    let mut tally = Tally {
        failures: natives.iter().flatten().map(|t| t.failures).sum(),
        ..Tally::default()
    };
    let mut wins = BTreeMap::new();
    for round in rounds {
        let results = natives.map(|t| t.and_then(|t| t.round(round)).copied());
        let values = results.map(|r| r.and_then(|r| r.value));
        if let Some(i) = stats::best(better, &values) {
            tally.rounds.extend(results[i]);
            *wins.entry(NATIVES[i].name().to_string()).or_insert(0) += 1;
        }
    }
    (tally, wins)
}

impl FigureReport {
    #[allow(clippy::too_many_arguments)] // one per side, each named at the call
    pub(crate) fn new(
        figure: &FigureDef,
        job: &Job,
        world: World,
        guest_component: &str,
        clients: Option<usize>,
        guest: Option<&Tally>,
        evloop: Option<&Tally>,
        threads: Option<&Tally>,
    ) -> FigureReport {
        let empty = Tally::default();
        let guest = guest.unwrap_or(&empty);
        let (native, baseline_rounds) = stronger(figure.better, evloop, threads);
        let sides = (guest, &native, evloop, threads);
        let latency = |pick: fn(&Tally) -> Vec<f64>| {
            let side = by_side(sides, |t| stats::median(&pick(t)));
            (side.guest.is_some() || side.native.is_some()).then_some(side)
        };
        let median_guest = stats::median(&guest.values());
        let median_native = stats::median(&native.values());
        // The native that was better in most rounds; the first of equals.
        let baseline = NATIVES
            .iter()
            .map(|kind| kind.name())
            .max_by_key(|name| {
                (
                    baseline_rounds.get(*name).copied().unwrap_or(0),
                    name == &"native-evloop",
                )
            })
            .unwrap_or("native-evloop")
            .to_string();
        let mut notes = Vec::new();
        let named = [
            ("guest", Some(guest)),
            (NativeKind::Evloop.name(), evloop),
            (NativeKind::Threads.name(), threads),
        ];
        for (side, tally) in named {
            let notes_of = tally.map(|t| t.notes.as_slice()).unwrap_or_default();
            notes.extend(notes_of.iter().map(|note| format!("{side}, {note}")));
        }
        match (job.workload, clients) {
            (Workload::StartToReady { cold: true }, _) => {
                notes.push("native has no compile step: its cold start is its warm start".into());
            }
            (Workload::OpenIdle, Some(n)) if n != IDLE_CONNECTIONS => {
                notes.push(format!(
                    "measured with {n} connections, not {IDLE_CONNECTIONS}"
                ));
            }
            _ => {}
        }
        FigureReport {
            name: figure.name.to_string(),
            unit: figure.unit.to_string(),
            better: figure.better,
            world,
            guest: median_guest,
            native: median_native,
            ratio: stats::ratio(figure.better, median_guest, median_native),
            baseline,
            baseline_rounds,
            guest_component: guest_component.to_string(),
            clients,
            native_evloop: evloop.and_then(|t| stats::median(&t.values())),
            native_threads: threads.and_then(|t| stats::median(&t.values())),
            spread: by_side(sides, |t| stats::spread(&t.values())),
            p50_us: latency(Tally::p50_us),
            p99_us: latency(Tally::p99_us),
            samples: by_side(sides, |t| t.values().len()),
            failed: by_side(sides, |t| t.failures),
            notes,
        }
    }

    /// Failures on any side (`failed.native` counts both natives).
    pub fn failures(&self) -> u64 {
        self.failed.guest + self.failed.native
    }

    /// Which native the ratio used: `evloop`, `threads`, or each with its rounds.
    fn versus(&self) -> String {
        let short = |name: &str| name.trim_start_matches("native-").to_string();
        match self.baseline_rounds.len() {
            0 => "-".into(),
            1 => short(&self.baseline),
            _ => self
                .baseline_rounds
                .iter()
                .map(|(name, n)| format!("{} {n}", short(name)))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl Report {
    pub fn new(
        machine: Machine,
        options: &BenchOptions,
        figures: Vec<FigureReport>,
        skipped: Vec<Skipped>,
    ) -> Report {
        Report {
            machine,
            quick: options.quick,
            rounds: options.rounds,
            warmup_ms: options.phases.warmup.as_millis() as u64,
            measure_ms: options.phases.measure.as_millis() as u64,
            worlds: options.worlds.list().to_vec(),
            ratio_means: RATIO_MEANS,
            native_means: NATIVE_MEANS,
            figures,
            skipped,
        }
    }

    /// The JSON document (`{"figures":[{"name","unit","guest","native","ratio",...}]}`).
    pub fn json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a report serialises");
        json.push('\n');
        json
    }

    /// One line per figure that had failures, for stderr: failures must not go unnoticed.
    pub fn failure_lines(&self) -> Vec<String> {
        self.figures
            .iter()
            .filter(|f| f.failures() > 0)
            .map(|f| {
                let native = |kind: NativeKind, n: Option<u64>| {
                    n.map(|n| format!(", {} {n}", kind.name()))
                        .unwrap_or_default()
                };
                format!(
                    "{} ({}): FAILED guest {}{}{}{}",
                    f.name,
                    f.world.name(),
                    f.failed.guest,
                    native(NativeKind::Evloop, f.failed.native_evloop),
                    native(NativeKind::Threads, f.failed.native_threads),
                    f.notes
                        .first()
                        .map(|n| format!(" (first: {n})"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    /// What was measured on what, one line each.
    fn header(&self) -> Vec<String> {
        let m = &self.machine;
        let worlds: Vec<String> = self
            .worlds
            .iter()
            .map(|w| match w {
                World::P2 => format!("{w} (p2)"),
                World::P3 => format!("{w} (p3: NAME-p3)"),
            })
            .collect();
        let mut lines = vec![
            format!(
                "sockbox {} ({} build) on {}, {} cores, {}; {}",
                m.sockbox, m.build, m.cpu, m.cores, m.os, m.date
            ),
            format!(
                "{} interleaved rounds{}, {} ms warm-up and {} ms measured per figure and server; \
                 medians, spread min-max",
                self.rounds,
                if self.quick { " (quick)" } else { "" },
                self.warmup_ms,
                self.measure_ms
            ),
            format!(
                "guests: the built-ins for {}; a --component file runs in its own world",
                worlds.join(" and ")
            ),
            format!("{RATIO_MEANS}; {NATIVE_MEANS} (`vs` says which)"),
        ];
        if m.build == "debug" {
            lines.push(
                "debug build: these figures say little about either side; use --release".into(),
            );
        }
        lines
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = self.header().join("\n");
        out.push_str("\n\n");
        let mut rows = vec![row([
            "figure",
            "world",
            "unit",
            "guest",
            "(min-max)",
            "native",
            "(min-max)",
            "ratio",
            "vs",
            "native-evloop",
            "native-threads",
            "failed (all rounds)",
        ])];
        for f in &self.figures {
            rows.push(vec![
                f.name.clone(),
                f.world.name().into(),
                f.unit.clone(),
                opt(f.guest),
                range(f.spread.guest),
                opt(f.native),
                range(f.spread.native),
                f.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                f.versus(),
                f.native_evloop.map_or(String::new(), num),
                f.native_threads.map_or(String::new(), num),
                failed(f),
            ]);
        }
        out.push_str(&columns(&rows));
        let latencies: Vec<_> = self.figures.iter().filter(|f| f.p50_us.is_some()).collect();
        if !latencies.is_empty() {
            out.push_str("\nlatency, µs p50 / p99\n");
            let mut rows = vec![row([
                "figure",
                "world",
                "guest",
                "native",
                "native-evloop",
                "native-threads",
            ])];
            for f in latencies {
                rows.push(vec![
                    f.name.clone(),
                    f.world.name().into(),
                    latency(f, |s| s.guest),
                    latency(f, |s| s.native),
                    latency(f, |s| s.native_evloop.flatten()),
                    latency(f, |s| s.native_threads.flatten()),
                ]);
            }
            out.push_str(&columns(&rows));
        }
        for line in self.trailer() {
            out.push('\n');
            out.push_str(&line);
        }
        out
    }

    /// Skipped figures and failures, after the tables.
    fn trailer(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for s in &self.skipped {
            match s.world {
                Some(world) => lines.push(format!(
                    "skipped {} ({}): {}",
                    s.name,
                    world.name(),
                    s.reason
                )),
                None => lines.push(format!("skipped {}: {}", s.name, s.reason)),
            }
        }
        lines.extend(self.failure_lines());
        lines
    }

    /// The markdown page; `chart` is the chart's file name beside it.
    pub fn markdown(&self, chart: Option<&str>) -> String {
        let mut out = String::from("# sockbox bench\n\n");
        for line in self.header() {
            out.push_str(&format!("{line}  \n"));
        }
        out.push_str(
            "\n| figure | world | unit | guest | native | ratio | vs | native-evloop | \
             native-threads | p50 µs guest / native | p99 µs guest / native | \
             failed (all rounds) |\n\
             |---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
        );
        for f in &self.figures {
            let both = |side: &Option<BySide<Option<f64>>>| match side {
                Some(s) => format!("{} / {}", opt(s.guest), opt(s.native)),
                None => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} {} | {} {} | {} | {} | {} | {} | {} | {} | {} |\n",
                f.name,
                f.world.name(),
                f.unit,
                opt(f.guest),
                range(f.spread.guest),
                opt(f.native),
                range(f.spread.native),
                f.ratio.map_or("-".into(), |r| format!("**{r:.2}**")),
                f.versus(),
                f.native_evloop.map_or(String::new(), num),
                f.native_threads.map_or(String::new(), num),
                both(&f.p50_us),
                both(&f.p99_us),
                failed(f),
            ));
        }
        if let Some(chart) = chart {
            out.push_str(&format!(
                "\n![round trips per second against concurrent clients]({chart})\n"
            ));
        }
        let trailer = self.trailer();
        if !trailer.is_empty() {
            out.push('\n');
            for line in trailer {
                out.push_str(&format!("- {line}\n"));
            }
        }
        let notes: Vec<_> = self
            .figures
            .iter()
            .flat_map(|f| {
                f.notes
                    .iter()
                    .map(move |n| format!("- {} ({}): {n}\n", f.name, f.world.name()))
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\n## Notes\n\n");
            out.extend(notes);
        }
        out
    }
}

/// `f` of the guest's, the better native's and (where measured) each native's tallies.
fn by_side<T>(
    (guest, native, evloop, threads): (&Tally, &Tally, Option<&Tally>, Option<&Tally>),
    f: impl Fn(&Tally) -> T,
) -> BySide<T> {
    BySide {
        guest: f(guest),
        native: f(native),
        native_evloop: evloop.map(&f),
        native_threads: threads.map(&f),
    }
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// About three significant digits, without exponents for the usual magnitudes.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), num)
}

fn range(spread: Option<[f64; 2]>) -> String {
    spread.map_or(String::new(), |[lo, hi]| {
        format!("({}-{})", num(lo), num(hi))
    })
}

fn failed(f: &FigureReport) -> String {
    match f.failures() {
        0 => String::new(),
        n => format!("{n} FAILED"),
    }
}

fn latency(f: &FigureReport, side: fn(&BySide<Option<f64>>) -> Option<f64>) -> String {
    match (
        f.p50_us.as_ref().and_then(side),
        f.p99_us.as_ref().and_then(side),
    ) {
        (Some(p50), Some(p99)) => format!("{} / {}", num(p50), num(p99)),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoundResult;
    use crate::figures::JOBS;

    /// Rounds 1, 2, ... with these values; p99 is twice p50.
    fn tally(values: &[f64], p50: &[f64], failures: u64) -> Tally {
        Tally {
            rounds: values
                .iter()
                .enumerate()
                .map(|(i, &v)| RoundResult {
                    round: i + 1,
                    value: Some(v),
                    p50_us: p50.get(i).copied(),
                    p99_us: p50.get(i).map(|v| v * 2.0),
                })
                .collect(),
            failures,
            notes: Vec::new(),
        }
    }

    fn job(name: &str) -> &'static Job {
        JOBS.iter().find(|j| j.name() == name).unwrap()
    }

    fn sample_report() -> Report {
        let rr = job("tcp-rr-64");
        let start = job("start-to-ready-ms");
        let figures = vec![
            FigureReport::new(
                &rr.figures[0],
                rr,
                World::P2,
                "echo",
                rr.clients(),
                Some(&tally(&[50.0, 40.0, 60.0], &[20.0, 21.0, 22.0], 0)),
                Some(&tally(&[100.0, 90.0, 110.0], &[10.0, 11.0, 12.0], 0)),
                Some(&tally(&[80.0, 80.0, 80.0], &[15.0, 15.0, 15.0], 0)),
            ),
            FigureReport::new(
                &start.figures[0],
                start,
                World::P3,
                "echo-p3",
                None,
                Some(&tally(&[20.0, 30.0], &[], 0)),
                Some(&tally(&[10.0, 10.0], &[], 2)),
                Some(&tally(&[12.0, 12.0], &[], 0)),
            ),
        ];
        let mut machine = Machine::here();
        machine.date = "2030-01-01T00:00:00Z".into();
        let skipped = vec![Skipped {
            name: "framing-small".into(),
            world: Some(World::P3),
            reason: "no framing-p3".into(),
        }];
        Report::new(machine, &BenchOptions::quick(), figures, skipped)
    }

    #[test]
    fn json_has_the_contract_shape() {
        let report = sample_report();
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        let figures = json["figures"].as_array().unwrap();
        assert_eq!(figures.len(), 2);
        let rr = &figures[0];
        assert_eq!(rr["name"], "tcp-rr-64");
        assert_eq!(rr["world"], "p2");
        assert_eq!(rr["unit"], "round trips/s");
        assert_eq!(rr["guest"], 50.0);
        assert_eq!(rr["native"], 100.0);
        assert_eq!(rr["ratio"], 0.5);
        assert_eq!(rr["baseline"], "native-evloop");
        assert_eq!(
            rr["baseline_rounds"],
            serde_json::json!({"native-evloop": 3})
        );
        assert_eq!(rr["native_evloop"], 100.0);
        assert_eq!(rr["native_threads"], 80.0);
        assert_eq!(rr["spread"]["guest"], serde_json::json!([40.0, 60.0]));
        assert_eq!(rr["p50_us"]["guest"], 21.0);
        assert_eq!(rr["p99_us"]["native"], 22.0);
        assert_eq!(rr["p99_us"]["native_threads"], 30.0);
        assert_eq!(rr["clients"], 64);
        // Lower is better: ratio is native/guest, against the faster native.
        let start = &figures[1];
        assert_eq!(start["world"], "p3");
        assert_eq!(start["better"], "lower");
        assert_eq!(start["ratio"], 0.4);
        assert_eq!(start["failed"]["native"], 2);
        assert_eq!(start["failed"]["native_evloop"], 2);
        assert!(start.get("p50_us").is_none());
        assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
        assert!(json["ratio_means"].as_str().unwrap().contains(">= 1"));
        assert_eq!(json["worlds"], serde_json::json!(["p2"]));
        assert_eq!(
            json["skipped"],
            serde_json::json!([{"name": "framing-small", "world": "p3", "reason": "no framing-p3"}])
        );
    }

    #[test]
    fn each_round_compares_with_the_native_that_did_better_in_it() {
        let rr = job("tcp-rr-64");
        let [throughput, p99, _] = rr.figures else {
            panic!("tcp-rr-64 has three figures")
        };
        // Round 1: evloop faster; rounds 2 and 3: threads faster; round 3 evloop failed.
        let evloop = Tally {
            rounds: vec![
                RoundResult {
                    round: 1,
                    value: Some(100.0),
                    ..Default::default()
                },
                RoundResult {
                    round: 2,
                    value: Some(60.0),
                    ..Default::default()
                },
                RoundResult {
                    round: 3,
                    value: None,
                    ..Default::default()
                },
            ],
            failures: 1,
            notes: vec!["round 3: gone".into()],
        };
        let threads = tally(&[90.0, 80.0, 70.0], &[], 0);
        let guest = tally(&[45.0, 40.0, 35.0], &[], 0);
        let f = FigureReport::new(
            throughput,
            rr,
            World::P3,
            "echo-p3",
            Some(64),
            Some(&guest),
            Some(&evloop),
            Some(&threads),
        );
        // Better natives by round: 100 (evloop), 80 (threads), 70 (threads).
        assert_eq!(f.native, Some(80.0));
        assert_eq!(f.spread.native, Some([70.0, 100.0]));
        assert_eq!(f.ratio, Some(0.5));
        assert_eq!(f.baseline, "native-threads");
        assert_eq!(
            f.baseline_rounds,
            BTreeMap::from([("native-evloop".into(), 1), ("native-threads".into(), 2)])
        );
        assert_eq!(f.versus(), "evloop 1, threads 2");
        assert_eq!(
            (f.native_evloop, f.native_threads),
            (Some(80.0), Some(80.0))
        );
        assert_eq!(f.samples.native, 3);
        assert_eq!(f.failed.native, 1);
        assert!(f.notes.iter().any(|n| n == "native-evloop, round 3: gone"));

        // Lower is better (p99): the lower native of each round.
        let evloop = tally(&[900.0, 1000.0], &[], 0);
        let threads = tally(&[1100.0, 500.0], &[], 0);
        let f = FigureReport::new(
            p99,
            rr,
            World::P2,
            "echo",
            Some(64),
            Some(&tally(&[1400.0, 1400.0], &[], 0)),
            Some(&evloop),
            Some(&threads),
        );
        assert_eq!(f.native, Some(700.0), "median of 900 and 500");
        assert_eq!(f.ratio, Some(0.5));
        // One round each: the first of equals, the event loop, is named.
        assert_eq!(f.baseline, "native-evloop");
        assert_eq!(f.versus(), "evloop 1, threads 1");
    }

    #[test]
    fn a_figure_with_no_native_value_has_no_ratio() {
        let rr = job("tcp-rr-1");
        let f = FigureReport::new(
            &rr.figures[0],
            rr,
            World::P2,
            "echo",
            Some(1),
            Some(&tally(&[10.0], &[], 0)),
            None,
            None,
        );
        assert_eq!((f.native, f.ratio), (None, None));
        assert!(f.baseline_rounds.is_empty());
        assert_eq!(f.versus(), "-");
    }

    #[test]
    fn texts_name_the_machine_the_ratio_the_world_and_the_failures() {
        let report = sample_report();
        let table = report.table();
        assert!(table.contains(&report.machine.cpu), "{table}");
        assert!(table.contains(RATIO_MEANS), "{table}");
        assert!(table.contains(NATIVE_MEANS), "{table}");
        assert!(
            table.contains("tcp-rr-64") && table.contains("0.50"),
            "{table}"
        );
        assert!(table.contains("2 FAILED"), "{table}");
        assert!(
            table.contains("skipped framing-small (p3): no framing-p3"),
            "{table}"
        );
        assert_eq!(report.failure_lines().len(), 1);
        assert!(
            report.failure_lines()[0].starts_with(
                "start-to-ready-ms (p3): FAILED guest 0, native-evloop 2, native-threads 0"
            ),
            "{:?}",
            report.failure_lines()
        );
        let md = report.markdown(Some("concurrency.svg"));
        assert!(
            md.contains("| tcp-rr-64 | p2 | round trips/s | 50.0 (40.0-60.0) |"),
            "{md}"
        );
        assert!(md.contains("](concurrency.svg)"), "{md}");
    }

    #[test]
    fn numbers_keep_about_three_digits() {
        assert_eq!(num(123456.7), "123457");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(0.012345), "0.012");
        assert_eq!(num(0.0), "0");
    }
}
