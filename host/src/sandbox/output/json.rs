//! `--log-format json`: the host's own lines about guests (denials, their summaries, `up`'s
//! events) as one JSON object a line, shaped like the tracing log lines beside them
//! (`timestamp`, `level`, `message`, `guest`, `target`), so a log shipper reads one format.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

static JSON: AtomicBool = AtomicBool::new(false);

/// Write the host's lines about guests as JSON objects from now on (the CLI's
/// `--log-format json`).
pub fn host_lines_as_json(yes: bool) {
    JSON.store(yes, Ordering::Relaxed);
}

/// The line to print: `line` as it is, or as a JSON object naming `guest`.
pub(super) fn shape(guest: Option<&str>, line: &str) -> String {
    if !JSON.load(Ordering::Relaxed) {
        return line.to_string();
    }
    #[derive(Serialize)]
    struct Line<'a> {
        timestamp: String,
        level: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        guest: Option<&'a str>,
        target: &'static str,
    }
    let line = Line {
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        level: "WARN",
        message: line.strip_prefix("sockbox: ").unwrap_or(line),
        guest,
        target: "sockbox",
    };
    serde_json::to_string(&line).unwrap_or_default()
}
