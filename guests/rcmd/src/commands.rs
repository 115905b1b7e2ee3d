//! The commands of rcmd, as a pure function from a request to a reply: no sockets, no host.

use chrono::{SecondsFormat, Utc};
use sha2::{Digest, Sha256};

/// The largest `seq N` (its output is about 6.9 MB, well inside a 16 MiB frame).
pub const MAX_SEQ: u64 = 1_000_000;

const HELP: &str = "\
echo ARGS    ARGS as given
upper ARGS   ARGS in upper case
rev ARGS     ARGS with its characters reversed
wc ARGS      number of bytes in ARGS
sha256 ARGS  SHA-256 of ARGS, lowercase hex
seq N        the lines 1 to N (N <= 1000000)
time         the current UTC time, RFC 3339
help         this list
";

/// The reply payload for a request payload: status byte (0 ok, 1 error), then the output.
pub fn reply(request: &[u8]) -> Vec<u8> {
    let (status, output) = match std::str::from_utf8(request) {
        Ok(line) => match run(line) {
            Ok(output) => (0, output),
            Err(message) => (1, message),
        },
        Err(_) => (1, "the command line is not UTF-8".to_string()),
    };
    let mut payload = Vec::with_capacity(1 + output.len());
    payload.push(status);
    payload.extend_from_slice(output.as_bytes());
    payload
}

/// Runs one command line: the command is the first word, ARGS everything after the first
/// space, verbatim. A trailing newline (from an interactive client) is ignored.
pub fn run(line: &str) -> Result<String, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (command, args) = line.split_once(' ').unwrap_or((line, ""));
    match command {
        "echo" => Ok(args.to_string()),
        "upper" => Ok(args.to_uppercase()),
        "rev" => Ok(args.chars().rev().collect()),
        "wc" => Ok(args.len().to_string()),
        "sha256" => Ok(hex(&Sha256::digest(args.as_bytes()))),
        "seq" => seq(args.trim()),
        "time" => Ok(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        "help" => Ok(HELP.to_string()),
        "" => Err("empty command line; try `help`".to_string()),
        other => Err(format!("unknown command `{other}`; try `help`")),
    }
}

fn seq(n: &str) -> Result<String, String> {
    let n: u64 = n
        .parse()
        .map_err(|_| format!("seq wants a whole number, not `{n}`"))?;
    if n > MAX_SEQ {
        return Err(format!("seq {n} is more than {MAX_SEQ}"));
    }
    let mut out = String::new();
    for i in 1..=n {
        out.push_str(&i.to_string());
        out.push('\n');
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_commands() {
        assert_eq!(run("echo  two  spaces"), Ok(" two  spaces".into()));
        assert_eq!(run("upper héllo"), Ok("HÉLLO".into()));
        assert_eq!(run("rev abc日本"), Ok("本日cba".into()));
        assert_eq!(run("wc héllo"), Ok("6".into()));
        assert_eq!(run("wc"), Ok("0".into()));
        assert_eq!(run("echo hi\r\n"), Ok("hi".into()));
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            run("sha256 abc"),
            Ok("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into())
        );
    }

    #[test]
    fn seq_lines_and_bounds() {
        assert_eq!(run("seq 3"), Ok("1\n2\n3\n".into()));
        assert_eq!(run("seq 0"), Ok(String::new()));
        assert!(run("seq 1000001").is_err());
        assert!(run("seq -1").is_err());
        assert!(run("seq").is_err());
    }

    #[test]
    fn reply_has_a_status_byte() {
        assert_eq!(reply(b"echo ok"), b"\0ok");
        assert_eq!(reply(b"rm -rf /")[0], 1);
        assert_eq!(reply(b"\xff")[0], 1);
        assert_eq!(reply(b"")[0], 1);
        assert!(reply(b"help").starts_with(b"\0echo ARGS"));
    }
}
