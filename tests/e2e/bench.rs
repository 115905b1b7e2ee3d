//! `sockbox bench`: the binary runs guests and native servers and reports figures as JSON.

use crate::support::sockbox;

#[test]
fn bench_json_reports_the_figures_asked_for_with_positive_numbers() {
    let (code, stdout, stderr) = sockbox(&[
        "bench",
        "--json",
        "--only",
        "tcp-rr-1,udp-echo",
        "--rounds",
        "1",
        "--duration-ms",
        "200",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout is JSON only:\n{stdout}"));
    let figures = report["figures"].as_array().expect("a figures array");
    let names: Vec<_> = figures
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tcp-rr-1", "udp-echo"]);
    for figure in figures {
        for field in ["guest", "native", "ratio"] {
            let value = figure[field].as_f64();
            assert!(value.is_some_and(|v| v > 0.0), "{field} of {figure}");
        }
        assert!(figure["unit"].as_str().is_some_and(|u| !u.is_empty()));
        assert_eq!(figure["failed"]["guest"], 0, "{figure}");
        // --world defaults to p2, and both natives ran.
        assert_eq!(figure["world"], "p2", "{figure}");
        assert!(figure["native_evloop"].as_f64().is_some_and(|v| v > 0.0));
        let baseline = figure["baseline"].as_str().unwrap();
        assert_eq!(figure["baseline_rounds"][baseline], 1, "{figure}");
    }
    assert_eq!(figures[0]["unit"], "round trips/s");
    assert!(
        figures[0]["native_threads"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
    );
}

#[test]
fn bench_world_p3_runs_the_wasi_0_3_echo() {
    let (code, stdout, stderr) = sockbox(&[
        "bench", "--quick", "--world", "p3", "--only", "tcp-rr-1", "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout is JSON only:\n{stdout}"));
    assert_eq!(report["worlds"], serde_json::json!(["p3"]));
    assert!(report.get("skipped").is_none(), "{report}");
    let figures = report["figures"].as_array().expect("a figures array");
    assert_eq!(figures.len(), 1, "{report}");
    let rr = &figures[0];
    assert_eq!(rr["name"], "tcp-rr-1");
    assert_eq!(rr["world"], "p3");
    assert_eq!(rr["guest_component"], "echo-p3");
    for field in ["guest", "native", "ratio"] {
        assert!(
            rr[field].as_f64().is_some_and(|v| v > 0.0),
            "{field} of {rr}"
        );
    }
    assert_eq!(rr["failed"]["guest"], 0, "{rr}");
}

#[test]
fn bench_names_an_unknown_figure() {
    let (code, _, stderr) = sockbox(&["bench", "--only", "tcp-rr-2"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("tcp-rr-2") && stderr.contains("tcp-rr-64"),
        "{stderr}"
    );
}
