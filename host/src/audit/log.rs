//! The audit log file: one JSON line per event, appended whole (concurrent writers, even
//! other processes, never interleave) and rotated at a size bound so it cannot fill a disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::AuditEvent;

/// Size at which an audit log is rotated unless told otherwise (see [`AuditLog::open_bounded`]).
pub const DEFAULT_AUDIT_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// An append-only JSONL file of audit events, shared by every guest of a run. It is bounded:
/// a line that would take it past its size bound first renames it to `FILE.1` (replacing the
/// previous one) and starts a fresh `FILE`, so the log never holds more than twice the bound.
#[derive(Debug)]
pub struct AuditLog {
    // One `write_all` per line on an O_APPEND file: lines from concurrent writers (even other
    // processes) do not interleave, and nothing is lost in a buffer if the host is killed.
    file: Mutex<Appender>,
    path: PathBuf,
    max_size: u64,
}

#[derive(Debug)]
struct Appender {
    file: File,
    /// Bytes in the current file as far as this process knows (others may append too).
    size: u64,
}

impl AuditLog {
    /// Opens (appending) with the default bound, [`DEFAULT_AUDIT_MAX_SIZE`].
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog> {
        AuditLog::open_bounded(path, DEFAULT_AUDIT_MAX_SIZE)
    }

    /// Opens (appending); past `max_size` bytes the file is rotated to `FILE.1`.
    pub fn open_bounded(path: impl AsRef<Path>, max_size: u64) -> Result<AuditLog> {
        let path = path.as_ref();
        anyhow::ensure!(max_size > 0, "the audit log's size bound must be above 0");
        let file = append(path)?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(AuditLog {
            file: Mutex::new(Appender { file, size }),
            path: path.to_path_buf(),
            max_size,
        })
    }

    /// Appends `ev` as one line, rotating the file first if the line would pass its bound.
    pub fn write(&self, ev: &AuditEvent) -> io::Result<()> {
        let mut line = ev.to_json_line();
        line.push('\n');
        let mut out = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if out.size > 0 && out.size + line.len() as u64 > self.max_size {
            self.rotate(&mut out)?;
        }
        out.file.write_all(line.as_bytes())?;
        out.size += line.len() as u64;
        out.file.flush()
    }

    fn rotate(&self, out: &mut Appender) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        out.file = append(&self.path).map_err(io::Error::other)?;
        out.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open audit log {}", path.display()))
}
