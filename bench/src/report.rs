//! The bench's results as data ([`Report`], serialised as the contract's JSON) and as text: a
//! terminal table and a markdown page. Every form says what was measured on what and what a
//! ratio means, so a figure is never read without its context.

use serde::Serialize;

use super::figures::{FigureDef, Job, Workload};
use super::stats::{self, Better};
use super::{BenchOptions, IDLE_CONNECTIONS, Machine, NativeKind, Tally};

/// How to read `ratio`, in every output.
pub const RATIO_MEANS: &str = "ratio = guest/native when higher is better, native/guest when \
    lower is better: >= 1 means the guest is as good as native or better";

/// Everything one bench run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub rounds: usize,
    pub warmup_ms: u64,
    pub measure_ms: u64,
    pub ratio_means: &'static str,
    pub figures: Vec<FigureReport>,
    /// Figures that were asked for but could not run here, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// One figure: medians over the rounds, their spread, and the ratio.
#[derive(Clone, Debug, Serialize)]
pub struct FigureReport {
    pub name: String,
    pub unit: String,
    pub better: Better,
    pub guest: Option<f64>,
    /// The baseline's median (`baseline` says which native server).
    pub native: Option<f64>,
    pub ratio: Option<f64>,
    pub baseline: String,
    /// The guest component (built-in name or path) and its extra `sockbox run` options.
    pub guest_component: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    /// Thread-per-connection median, where measured.
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
    /// Connections, clients or servers that failed, summed over the rounds.
    pub failed: BySide<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A value for the guest, the baseline and (where measured) native-threads.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BySide<T> {
    pub guest: T,
    pub native: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_threads: Option<T>,
}

impl FigureReport {
    pub(crate) fn new(
        figure: &FigureDef,
        job: &Job,
        guest_component: &str,
        clients: Option<usize>,
        guest: Option<Tally>,
        native: Option<Tally>,
        threads: Option<Tally>,
    ) -> FigureReport {
        let guest = guest.unwrap_or_default();
        let native = native.unwrap_or_default();
        // When threads are the baseline, they are also the native-threads figure.
        let threads = match job.baseline {
            NativeKind::Threads => Some(&native),
            NativeKind::Evloop => threads.as_ref(),
        };
        let sides = (&guest, &native, threads);
        let latency = |pick: fn(&Tally) -> &Vec<f64>| {
            let side = by_side(sides, |t| stats::median(pick(t)));
            (side.guest.is_some() || side.native.is_some()).then_some(side)
        };
        let median_guest = stats::median(&guest.values);
        let median_native = stats::median(&native.values);
        let mut notes = Vec::new();
        for (side, tally) in [("guest", &guest), (job.baseline.name(), &native)]
            .into_iter()
            .chain(
                threads
                    .filter(|_| job.baseline != NativeKind::Threads)
                    .map(|t| ("native-threads", t)),
            )
        {
            notes.extend(tally.notes.iter().map(|note| format!("{side}, {note}")));
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
            guest: median_guest,
            native: median_native,
            ratio: stats::ratio(figure.better, median_guest, median_native),
            baseline: job.baseline.name().to_string(),
            guest_component: guest_component.to_string(),
            clients,
            native_threads: threads.and_then(|t| stats::median(&t.values)),
            spread: by_side(sides, |t| stats::spread(&t.values)),
            p50_us: latency(|t| &t.p50_us),
            p99_us: latency(|t| &t.p99_us),
            samples: by_side(sides, |t| t.values.len()),
            failed: by_side(sides, |t| t.failures),
            notes,
        }
    }

    /// Failures on any side.
    pub fn failures(&self) -> u64 {
        self.failed.guest + self.failed.native + self.failed.native_threads.unwrap_or(0)
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
            ratio_means: RATIO_MEANS,
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
                let threads = f
                    .failed
                    .native_threads
                    .filter(|_| f.baseline != "native-threads")
                    .map(|n| format!(", native-threads {n}"))
                    .unwrap_or_default();
                format!(
                    "{}: FAILED guest {}, {} {}{threads}{}",
                    f.name,
                    f.failed.guest,
                    f.baseline,
                    f.failed.native,
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
            format!("{RATIO_MEANS}; native = native-evloop (one thread, tokio) unless marked"),
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
            "unit",
            "guest",
            "(min-max)",
            "native",
            "(min-max)",
            "ratio",
            "native-threads",
            "failed (all rounds)",
        ])];
        for f in &self.figures {
            rows.push(vec![
                f.name.clone(),
                f.unit.clone(),
                opt(f.guest),
                range(f.spread.guest),
                format!("{}{}", opt(f.native), marker(f)),
                range(f.spread.native),
                f.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                f.native_threads.map_or(String::new(), num),
                failed(f),
            ]);
        }
        out.push_str(&columns(&rows));
        let latencies: Vec<_> = self.figures.iter().filter(|f| f.p50_us.is_some()).collect();
        if !latencies.is_empty() {
            out.push_str("\nlatency, µs p50 / p99\n");
            let mut rows = vec![row(["figure", "guest", "native", "native-threads"])];
            for f in latencies {
                rows.push(vec![
                    f.name.clone(),
                    latency(f, |s| s.guest),
                    format!("{}{}", latency(f, |s| s.native), marker(f)),
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
        if self.figures.iter().any(|f| f.baseline == "native-threads") {
            lines.push("* native is native-threads (thread per connection) for this figure".into());
        }
        for s in &self.skipped {
            lines.push(format!("skipped {}: {}", s.name, s.reason));
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
            "\n| figure | unit | guest | native | ratio | native-threads | \
             p50 µs guest / native | p99 µs guest / native | failed (all rounds) |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for f in &self.figures {
            let both = |side: &Option<BySide<Option<f64>>>| match side {
                Some(s) => format!("{} / {}", opt(s.guest), opt(s.native)),
                None => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} | {} {} | {}{} {} | {} | {} | {} | {} | {} |\n",
                f.name,
                f.unit,
                opt(f.guest),
                range(f.spread.guest),
                opt(f.native),
                marker(f),
                range(f.spread.native),
                f.ratio.map_or("-".into(), |r| format!("**{r:.2}**")),
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
            .flat_map(|f| f.notes.iter().map(move |n| format!("- {}: {n}\n", f.name)))
            .collect();
        if !notes.is_empty() {
            out.push_str("\n## Notes\n\n");
            out.extend(notes);
        }
        out
    }
}

/// `f` of the guest's, the baseline's and (where measured) native-threads' tallies.
fn by_side<T>(
    (guest, native, threads): (&Tally, &Tally, Option<&Tally>),
    f: impl Fn(&Tally) -> T,
) -> BySide<T> {
    BySide {
        guest: f(guest),
        native: f(native),
        native_threads: threads.map(f),
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

fn marker(f: &FigureReport) -> &'static str {
    if f.baseline == "native-threads" {
        " *"
    } else {
        ""
    }
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
    use crate::figures::JOBS;

    fn tally(values: &[f64], p50: &[f64], failures: u64) -> Option<Tally> {
        Some(Tally {
            values: values.to_vec(),
            p50_us: p50.to_vec(),
            p99_us: p50.iter().map(|v| v * 2.0).collect(),
            failures,
            notes: Vec::new(),
        })
    }

    fn job(name: &str) -> &'static Job {
        JOBS.iter().find(|j| j.figures[0].name == name).unwrap()
    }

    fn sample_report() -> Report {
        let rr = job("tcp-rr-64");
        let start = job("start-to-ready-ms");
        let figures = vec![
            FigureReport::new(
                &rr.figures[0],
                rr,
                "echo",
                rr.clients(),
                tally(&[50.0, 40.0, 60.0], &[20.0, 21.0, 22.0], 0),
                tally(&[100.0, 90.0, 110.0], &[10.0, 11.0, 12.0], 0),
                tally(&[80.0], &[15.0], 0),
            ),
            FigureReport::new(
                &start.figures[0],
                start,
                "echo",
                None,
                tally(&[20.0, 30.0], &[], 0),
                tally(&[10.0, 10.0], &[], 2),
                None,
            ),
        ];
        let mut machine = Machine::here();
        machine.date = "2030-01-01T00:00:00Z".into();
        Report::new(machine, &BenchOptions::quick(), figures, Vec::new())
    }

    #[test]
    fn json_has_the_contract_shape() {
        let report = sample_report();
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        let figures = json["figures"].as_array().unwrap();
        assert_eq!(figures.len(), 2);
        let rr = &figures[0];
        assert_eq!(rr["name"], "tcp-rr-64");
        assert_eq!(rr["unit"], "round trips/s");
        assert_eq!(rr["guest"], 50.0);
        assert_eq!(rr["native"], 100.0);
        assert_eq!(rr["ratio"], 0.5);
        assert_eq!(rr["baseline"], "native-evloop");
        assert_eq!(rr["native_threads"], 80.0);
        assert_eq!(rr["spread"]["guest"], serde_json::json!([40.0, 60.0]));
        assert_eq!(rr["p50_us"]["guest"], 21.0);
        assert_eq!(rr["p99_us"]["native"], 22.0);
        assert_eq!(rr["clients"], 64);
        // Lower is better: ratio is native/guest.
        let start = &figures[1];
        assert_eq!(start["better"], "lower");
        assert_eq!(start["ratio"], 0.4);
        assert_eq!(start["failed"]["native"], 2);
        assert!(start.get("p50_us").is_none());
        assert!(start.get("native_threads").is_none());
        assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
        assert!(json["ratio_means"].as_str().unwrap().contains(">= 1"));
    }

    #[test]
    fn threads_as_baseline_are_also_the_threads_figure() {
        let x2 = job("tcp-rr-64-x2");
        let f = FigureReport::new(
            &x2.figures[0],
            x2,
            "echo --instances 2",
            x2.clients(),
            tally(&[30.0], &[1.0], 0),
            tally(&[60.0], &[1.0], 0),
            None,
        );
        assert_eq!(f.baseline, "native-threads");
        assert_eq!(f.native_threads, Some(60.0));
        assert_eq!(f.ratio, Some(0.5));
    }

    #[test]
    fn texts_name_the_machine_the_ratio_and_the_failures() {
        let report = sample_report();
        let table = report.table();
        assert!(table.contains(&report.machine.cpu), "{table}");
        assert!(table.contains(RATIO_MEANS), "{table}");
        assert!(
            table.contains("tcp-rr-64") && table.contains("0.50"),
            "{table}"
        );
        assert!(table.contains("2 FAILED"), "{table}");
        assert_eq!(report.failure_lines().len(), 1);
        let md = report.markdown(Some("concurrency.svg"));
        assert!(
            md.contains("| tcp-rr-64 | round trips/s | 50.0 (40.0-60.0) |"),
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
