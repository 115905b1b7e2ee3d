//! The guest arguments the built-in servers share (`sockbox run g -- ARGS`): the connection
//! timeouts `--idle-timeout D` and `--read-timeout D`, and byte limits such as `--max-frame N`.
//! One parser, so every guest spells and reports them the same way.

use lexopt::Arg::Long;
use lexopt::ValueExt;

use crate::timeouts::{Timeouts, parse_timeout};

/// Parses `args`: `--idle-timeout D` and `--read-timeout D` into the returned [`Timeouts`]
/// (defaults where absent; D as [`parse_timeout`] takes it), and each `--NAME N` of `sizes`
/// (a flag's name without its dashes, and the byte count it sets). Anything else is an error;
/// every error names the flag and the bad value, and one the parser raises ends with `usage`.
pub fn parse(
    args: Vec<String>,
    usage: &str,
    sizes: &mut [(&str, &mut usize)],
) -> Result<Timeouts, String> {
    let mut timeouts = Timeouts::default();
    let mut parser = lexopt::Parser::from_args(args);
    let fail = |e: lexopt::Error| format!("{e}\n{usage}");
    while let Some(arg) = parser.next().map_err(fail)? {
        let flag = match arg {
            Long(flag) => flag.to_owned(),
            other => return Err(fail(other.unexpected())),
        };
        let limit = match flag.as_str() {
            "idle-timeout" => Ok(&mut timeouts.idle),
            "read-timeout" => Ok(&mut timeouts.read),
            _ => match sizes.iter_mut().find(|(name, _)| *name == flag) {
                Some((_, size)) => Err(size),
                None => return Err(fail(Long(&flag).unexpected())),
            },
        };
        let value = parser.value().map_err(fail)?.string().map_err(fail)?;
        match limit {
            Ok(timeout) => {
                *timeout = parse_timeout(&value).map_err(|e| format!("--{flag}: {e}"))?;
            }
            Err(size) => {
                **size = value
                    .parse()
                    .map_err(|_| format!("--{flag} wants a number of bytes, not `{value}`"))?;
            }
        }
    }
    Ok(timeouts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const USAGE: &str = "usage: g [--max-frame BYTES] [--idle-timeout D] [--read-timeout D]";

    #[test]
    fn timeouts_and_sizes_come_from_the_arguments() {
        let mut max = 7;
        let timeouts = parse(
            args(&[
                "--max-frame",
                "1024",
                "--idle-timeout",
                "2s",
                "--read-timeout=off",
            ]),
            USAGE,
            &mut [("max-frame", &mut max)],
        )
        .unwrap();
        assert_eq!(max, 1024);
        assert_eq!(timeouts.idle, Some(Duration::from_secs(2)));
        assert_eq!(timeouts.read, None);
        let mut max = 7;
        let defaults = parse(Vec::new(), USAGE, &mut [("max-frame", &mut max)]).unwrap();
        assert_eq!((defaults, max), (Timeouts::default(), 7));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let err = |list: &[&str]| {
            parse(args(list), USAGE, &mut [("max-frame", &mut 0)])
                .err()
                .unwrap()
        };
        let e = err(&["--read-timeout", "soon"]);
        assert!(
            e.starts_with("--read-timeout: `soon` is not a timeout"),
            "{e}"
        );
        let e = err(&["--max-frame", "lots"]);
        assert_eq!(e, "--max-frame wants a number of bytes, not `lots`");
        let e = err(&["--fast"]);
        assert!(e.contains("--fast") && e.ends_with(USAGE), "{e}");
        let e = err(&["stray"]);
        assert!(e.contains("stray") && e.ends_with(USAGE), "{e}");
        let e = err(&["--idle-timeout"]);
        assert!(e.contains("--idle-timeout") && e.ends_with(USAGE), "{e}");
    }
}
