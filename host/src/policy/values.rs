//! The value syntax shared by flags, policy files and the `up` manifest: socket addresses,
//! sizes, durations, DNS answers, and TOML errors that name the file and line.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use toml::Spanned;

/// A concrete `ip:port` (`[v6]:port`), as `--listen` and `--udp` take.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("expected ip:port (e.g. 127.0.0.1:7000 or [::1]:7000), got {s:?}"))
}

/// The answers of one `dns-map` entry: an IP address or a list of them, at least one.
pub(super) fn parse_dns_answers(value: &Spanned<toml::Value>) -> Result<Vec<IpAddr>> {
    let strings: Vec<&str> = match value.get_ref() {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| anyhow!("expected IP address strings"))
            })
            .collect::<Result<_>>()?,
        _ => bail!("expected a list of IP addresses, e.g. [\"127.0.0.1\"]"),
    };
    if strings.is_empty() {
        bail!("expected at least one IP address");
    }
    strings
        .into_iter()
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| anyhow!("`{s}` is not an IP address"))
        })
        .collect()
}

/// A size in bytes: `1048576`, `512KiB`, `64MiB`, `1GiB` (binary), `64MB` (decimal), `64M`
/// (binary, as ulimit and docker read it). Units are case-insensitive; zero is refused.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = (&s[..split], s[split..].trim());
    if digits.is_empty() {
        bail!("{s:?} is not a size (expected e.g. 64MiB, 512KiB or a number of bytes)");
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("size {s:?} is too large"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => bail!(
            "unknown size unit {unit:?} in {s:?} (expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
        ),
    };
    let bytes = n
        .checked_mul(multiplier)
        .ok_or_else(|| anyhow!("size {s:?} is too large"))?;
    if bytes == 0 {
        bail!("size must be more than 0");
    }
    Ok(bytes)
}

/// A duration in milliseconds: `500`, `500ms` or `2s`; zero is refused.
pub fn parse_millis(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (digits, scale) = if let Some(d) = s.strip_suffix("ms") {
        (d.trim(), 1)
    } else if let Some(d) = s.strip_suffix('s') {
        (d.trim(), 1000)
    } else {
        (s, 1)
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a duration (expected milliseconds, e.g. 500 or 2s)"))?;
    let ms = n
        .checked_mul(scale)
        .ok_or_else(|| anyhow!("duration {s:?} is too long"))?;
    if ms == 0 {
        bail!("duration must be more than 0");
    }
    Ok(Duration::from_millis(ms))
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML syntax or shape error as `file:line: message`, in the words TOML users know.
pub(crate) fn toml_error(e: &toml::de::Error, text: &str, file_name: &str) -> anyhow::Error {
    // serde's word for an array is "sequence"; say it the way TOML users do.
    let message = e
        .message()
        .trim_end()
        .replace("expected a sequence", "expected a list, e.g. [\"...\"]");
    match e.span() {
        Some(span) => anyhow!("{file_name}:{}: {message}", line_of(text, span.start)),
        None => anyhow!("{file_name}: {message}"),
    }
}
