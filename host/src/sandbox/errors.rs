//! Errors as guests and users see them: one line, never the host's stack.
//!
//! With `RUST_BACKTRACE=1` in the host's environment, every `wasmtime::Error` (and anyhow
//! error) captures the host's Rust backtrace, and its `Debug` form prints it. wasmtime-wasi
//! answers `wasi:io/error.to-debug-string` with that `Debug` form, so a guest reading from a
//! reset connection got dozens of lines of the host's stack; trap messages printed it too.
//! Here `to-debug-string` is replaced by the one-line chain (`{:#}`), and traps are described
//! by their message, causes and *wasm* backtrace (the guest's own) without the host stack,
//! whatever `RUST_BACKTRACE` says. The full form is logged under `SOCKBOX_LOG=debug`. The hook
//! that answers the guest is in `link/errors.rs`.

use crate::audit::log_text;

/// Most bytes of a trap description; a deep recursion's wasm backtrace has a line per frame.
const TRAP_TEXT_MAX: usize = 16 * 1024;
/// Most lines of a trap description.
const TRAP_LINES_MAX: usize = 120;

/// The error and its causes on one line, escaped and bounded like every guest-facing log text.
pub(crate) fn one_line(err: &wasmtime::Error) -> String {
    log_text(&format!("{err:#}"))
}

/// A trap or host error that ended a guest: its message, its causes and the wasm backtrace,
/// without the host's Rust backtrace; control characters escaped (the wasm backtrace names
/// the guest's own functions, which it chose), at most [`TRAP_LINES_MAX`] lines.
pub(crate) fn describe_trap(err: &wasmtime::Error) -> String {
    tracing::debug!("guest error in full: {err:?}");
    let mut text = err.to_string();
    let causes: Vec<String> = err.chain().skip(1).map(|e| e.to_string()).collect();
    if !causes.is_empty() {
        text.push_str("\n\nCaused by:");
        for (i, cause) in causes.iter().enumerate() {
            if causes.len() > 1 {
                text.push_str(&format!("\n{i: >5}: {cause}"));
            } else {
                text.push_str(&format!("\n    {cause}"));
            }
        }
    }
    bounded_lines(&text)
}

/// Multi-line text with each line's control characters escaped, bounded in lines and bytes.
fn bounded_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i == TRAP_LINES_MAX || out.len() > TRAP_TEXT_MAX {
            out.push_str(&format!("… ({} more lines)", lines.len() - i));
            return out;
        }
        if i > 0 {
            out.push('\n');
        }
        // Lines are escaped, but their quotes stay readable.
        let escaped: String = line
            .chars()
            .flat_map(|c| match c {
                '\t' | '"' | '\'' | '\\' => vec![c],
                c => c.escape_debug().collect(),
            })
            .take(1024)
            .collect();
        out.push_str(&escaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_text_has_no_host_backtrace_and_is_bounded() {
        // Capture a host backtrace whatever the environment says.
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let err = wasmtime::Error::from(io).context("while reading");
        let text = describe_trap(&err);
        assert!(!text.contains("Stack backtrace"), "{text}");
        assert!(text.starts_with("while reading\n\nCaused by:\n"), "{text}");
        assert_eq!(one_line(&err), "while reading: connection reset");

        let frames: String = (0..10_000)
            .map(|i| format!("  {i}: 0x1 - f\u{1b}[31m{i}\n"))
            .collect();
        let deep = describe_trap(&wasmtime::format_err!("{frames}"));
        assert!(deep.lines().count() <= TRAP_LINES_MAX + 1, "{deep}");
        assert!(deep.len() <= TRAP_TEXT_MAX + 2048, "{}", deep.len());
        assert!(!deep.contains('\u{1b}'), "{deep}");
        assert!(deep.ends_with("more lines)"), "{deep}");
    }
}
