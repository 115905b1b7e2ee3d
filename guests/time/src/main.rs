//! time: the current UTC time, over TCP and UDP (whichever `--listen`/`--udp` is granted).
//!
//! - TCP: on connect, the time as RFC 3339 and `\n`, then the connection closes.
//! - UDP: the datagram is a strftime format (`%Y-%m-%d %X`); the reply is the time in it.
//!   An empty datagram gets RFC 3339; an invalid format gets `ERR invalid format`.
//!
//! Also the WASI 0.3 `time-p3` (`guests/p3/time`), built from this file with the SDK's
//! `p3` feature.

use std::fmt::Write as _;

use chrono::format::StrftimeItems;
use chrono::{DateTime, SecondsFormat, Utc};
use sockbox_guest::net::{MAX_DATAGRAM, TcpStream};
use sockbox_guest::serve::serve_tcp_and_udp;

sockbox_guest::main!(serve_tcp_and_udp(
    |stream: TcpStream, _peer| async move {
        let line = format!("{}\n", rfc3339(Utc::now()));
        stream.write_all(line.as_bytes()).await
    },
    |format| formatted(Utc::now(), &format).into_bytes(),
));

fn rfc3339(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `now` in the strftime `format`, or an `ERR` line: a client's bad format must never panic
/// the guest (chrono's `Display` of an invalid format would).
fn formatted(now: DateTime<Utc>, format: &[u8]) -> String {
    if format.is_empty() {
        return rfc3339(now);
    }
    let Ok(format) = std::str::from_utf8(format) else {
        return "ERR format is not UTF-8".into();
    };
    let Ok(items) = StrftimeItems::new(format).parse() else {
        return "ERR invalid format".into();
    };
    let mut out = String::new();
    if write!(out, "{}", now.format_with_items(items.iter())).is_err() {
        return "ERR invalid format".into();
    }
    if out.len() > MAX_DATAGRAM {
        return "ERR reply too large for a datagram".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_errors() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(formatted(t, b"%Y-%m-%d %X"), "2023-11-14 22:13:20");
        assert_eq!(formatted(t, b""), "2023-11-14T22:13:20.000Z");
        assert_eq!(formatted(t, b"%Q"), "ERR invalid format");
        assert_eq!(formatted(t, b"100%"), "ERR invalid format");
        assert_eq!(formatted(t, b"\xff"), "ERR format is not UTF-8");
    }
}
