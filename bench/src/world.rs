//! Which WASI a guest is built for, as the bench names it (`p2`, `p3`), and which guest serves
//! a figure in each world: the built-in `<guest>` for WASI 0.2, its twin `<guest>-p3` for WASI
//! 0.3, or a component file given with `--component`, which is what it is (its own world, read
//! the way `sockbox check` reads it).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::Serialize;

/// A guest's WASI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// WASI 0.2: pollables.
    P2,
    /// WASI 0.3: component-model async (streams, futures).
    P3,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::P2 => "p2",
            World::P3 => "p3",
        }
    }

    /// The name of `guest`'s built-in in this world: `echo`, `echo-p3`.
    pub fn builtin_name(self, guest: &str) -> String {
        match self {
            World::P2 => guest.to_string(),
            World::P3 => format!("{guest}-p3"),
        }
    }

    /// The built-in guest speaking `guest`'s protocol in this world, if the binary has one.
    pub fn builtin(self, guest: &str) -> Option<String> {
        let name = self.builtin_name(guest);
        sockbox::builtin::get(&name).map(|_| name)
    }

    /// The world of the component (or Python guest) at `path`, as `sockbox check` reads it.
    pub fn of_file(path: &Path) -> Result<World> {
        let source = sockbox::GuestSource::parse(&path.display().to_string());
        let inspection = sockbox::sandbox::inspect(&source)
            .with_context(|| format!("read the WASI world of {}", path.display()))?;
        match inspection.wasi {
            Some(sockbox::World::P2) => Ok(World::P2),
            Some(sockbox::World::P3) => Ok(World::P3),
            None => anyhow::bail!(
                "{}: not a WASI 0.2 or 0.3 command (see `sockbox check {}`)",
                path.display(),
                path.display()
            ),
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::P2 => "WASI 0.2",
            World::P3 => "WASI 0.3",
        })
    }
}

/// `--world p2|p3|both`: the worlds whose built-in guests are benched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Worlds {
    #[default]
    P2,
    P3,
    Both,
}

impl Worlds {
    /// In the order a round runs them.
    pub fn list(self) -> &'static [World] {
        match self {
            Worlds::P2 => &[World::P2],
            Worlds::P3 => &[World::P3],
            Worlds::Both => &[World::P2, World::P3],
        }
    }
}

impl FromStr for Worlds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "p2" => Ok(Worlds::P2),
            "p3" => Ok(Worlds::P3),
            "both" => Ok(Worlds::Both),
            _ => Err(format!("`{s}` is not a world (p2, p3 or both)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_parse_and_list_in_round_order() {
        assert_eq!("p2".parse::<Worlds>().unwrap().list(), [World::P2]);
        assert_eq!("p3".parse::<Worlds>().unwrap().list(), [World::P3]);
        assert_eq!(
            "both".parse::<Worlds>().unwrap().list(),
            [World::P2, World::P3]
        );
        assert_eq!(Worlds::default(), Worlds::P2, "today's bench by default");
        let err = "0.3".parse::<Worlds>().unwrap_err();
        assert!(err.contains("p2, p3 or both"), "{err}");
    }

    #[test]
    fn a_world_names_its_built_in() {
        assert_eq!(World::P2.builtin("echo").as_deref(), Some("echo"));
        assert_eq!(World::P2.builtin("no-such-guest"), None);
        // The p3 twin exists exactly when the binary embeds it.
        let p3 = sockbox::builtin::names().any(|n| n == "echo-p3");
        assert_eq!(World::P3.builtin("echo").is_some(), p3);
        assert_eq!(World::P3.name(), "p3");
        assert_eq!(World::P3.to_string(), "WASI 0.3");
    }
}
