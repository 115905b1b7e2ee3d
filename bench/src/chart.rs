//! The concurrency sweep as a picture: round trips per second against concurrent clients
//! (log axis) for the guest of each world benched, native-evloop and native-threads, where a
//! trend shows at a glance that a table hides.
//!
//! SVG through plotters' SVG backend only: text is left to the viewer's fonts, so building
//! sockbox needs no font library on the machine.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::figures::SWEEP;
use super::report::{FigureReport, Report};
use super::world::World;

/// A line on the chart: its legend, colour and (clients, round trips/s) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Draws the sweep to `path`; `false` (and no file) when the report has no sweep figure.
pub fn concurrency(report: &Report, path: &Path) -> Result<bool> {
    let sweep: Vec<&FigureReport> = report
        .figures
        .iter()
        .filter(|f| SWEEP.contains(&f.name.as_str()) && f.clients.is_some())
        .collect();
    let of_world = |world| -> Vec<&FigureReport> {
        sweep.iter().copied().filter(|f| f.world == world).collect()
    };
    // Both worlds' reports carry the same natives: draw them once.
    let mut natives = sweep.clone();
    natives.dedup_by(|a, b| a.name == b.name);
    let series: [Series; 4] = [
        (
            "guest, WASI 0.2 (p2)",
            RGBColor(0xd6, 0x27, 0x28),
            points(&of_world(World::P2), |f| f.guest),
        ),
        (
            "guest, WASI 0.3 (p3)",
            RGBColor(0x94, 0x67, 0xbd),
            points(&of_world(World::P3), |f| f.guest),
        ),
        (
            "native-evloop",
            RGBColor(0x1f, 0x77, 0xb4),
            points(&natives, |f| f.native_evloop),
        ),
        (
            "native-threads",
            RGBColor(0x2c, 0xa0, 0x2c),
            points(&natives, |f| f.native_threads),
        ),
    ];
    if series.iter().all(|(_, _, p)| p.is_empty()) {
        return Ok(false);
    }
    let max_clients = sweep.iter().filter_map(|f| f.clients).max().unwrap_or(1) as f64;
    let max_rate = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!(
            "round trips/s, 32-byte echo ({} build, {})",
            report.machine.build, report.machine.cpu
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (0.7f64..max_clients * 1.5).log_scale(),
                0.0..(max_rate * 1.1).max(1.0),
            )?;
        chart
            .configure_mesh()
            .x_desc("concurrent clients (log scale)")
            .y_desc("round trips/s (median)")
            .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (name, color, points) in &series {
            if points.is_empty() {
                continue;
            }
            let color = *color;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .iter()
                    .map(|&point| Circle::new(point, 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|err| anyhow!("draw {}: {err}", path.display()))?;
    Ok(true)
}

/// (clients, value) for each sweep figure that has the value.
fn points(sweep: &[&FigureReport], value: fn(&FigureReport) -> Option<f64>) -> Vec<(f64, f64)> {
    sweep
        .iter()
        .filter_map(|f| Some((f.clients? as f64, value(f)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::JOBS;
    use crate::{BenchOptions, Machine, RoundResult, Tally};

    fn tally(value: f64) -> Tally {
        Tally {
            rounds: vec![RoundResult {
                round: 1,
                value: Some(value),
                ..RoundResult::default()
            }],
            ..Tally::default()
        }
    }

    fn report(names: &[&str], worlds: &[World]) -> Report {
        let mut figures = Vec::new();
        for job in JOBS.iter().filter(|job| names.contains(&job.name())) {
            for &world in worlds {
                let clients = job.clients().unwrap_or(1) as f64;
                figures.push(FigureReport::new(
                    &job.figures[0],
                    job,
                    world,
                    "echo",
                    job.clients(),
                    Some(&tally(1000.0 + clients)),
                    Some(&tally(2000.0 + clients)),
                    Some(&tally(3000.0 + clients)),
                ));
            }
        }
        Report::new(Machine::here(), &BenchOptions::quick(), figures, Vec::new())
    }

    fn draw(report: &Report) -> String {
        let dir = std::env::temp_dir().join(format!(
            "sockbox-chart-{}-{}",
            std::process::id(),
            report.figures.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("concurrency.svg");
        assert!(concurrency(report, &path).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        svg
    }

    #[test]
    fn the_sweep_is_drawn_with_a_line_per_server() {
        let svg = draw(&report(SWEEP, &[World::P2]));
        for label in [
            "guest, WASI 0.2",
            "native-evloop",
            "native-threads",
            "concurrent clients",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(!svg.contains("WASI 0.3"));
        assert_eq!(
            svg.matches("<circle").count(),
            3 * SWEEP.len(),
            "a point per server and figure"
        );
    }

    #[test]
    fn both_worlds_get_a_guest_line_each_and_the_natives_once() {
        let svg = draw(&report(SWEEP, &[World::P2, World::P3]));
        assert!(svg.contains("guest, WASI 0.2") && svg.contains("guest, WASI 0.3"));
        assert_eq!(svg.matches("<circle").count(), 4 * SWEEP.len());
    }

    #[test]
    fn no_sweep_no_chart() {
        let path = std::env::temp_dir().join("sockbox-chart-never-written.svg");
        assert!(!concurrency(&report(&["udp-echo"], &[World::P2]), &path).unwrap());
        assert!(!path.exists());
    }
}
