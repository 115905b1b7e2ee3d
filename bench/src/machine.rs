//! What was measured on what: a figure means little without the machine, the build and the
//! date beside it.

use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Machine {
    /// CPU model, as /proc/cpuinfo names it.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// Operating system and kernel release.
    pub os: String,
    /// sockbox version.
    pub sockbox: String,
    /// `release` or `debug`: debug figures say little about either side.
    pub build: String,
    /// When the bench ran (RFC 3339, UTC).
    pub date: String,
}

impl Machine {
    pub fn here() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("model name"))
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| format!(" {}", release.trim()))
            .unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{}{kernel}", std::env::consts::OS),
            sockbox: env!("CARGO_PKG_VERSION").to_string(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}
