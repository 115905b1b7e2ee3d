//! What a component is and what it could attempt, without running it (`sockbox check`).

use std::fmt;

use anyhow::Result;

use super::link::{
    FILESYSTEM, NAME_LOOKUP, TCP, UDP, World, imports_control, prepare, unversioned, world,
};
use crate::compile::{self, CompileCache};
use crate::guest::GuestSource;

/// A component's interface and what it means under sockbox.
#[derive(Debug)]
pub struct Inspection {
    /// The guest reference as given (built-in name or path).
    pub name: String,
    /// The interfaces it imports, as the component names them (`wasi:sockets/tcp@0.2.0`).
    pub imports: Vec<String>,
    /// The interfaces it exports.
    pub exports: Vec<String>,
    /// It imports `sockbox:guest/control` (graceful shutdown, granted addresses).
    pub uses_control: bool,
    /// The WASI it is built for (from its `wasi:cli/run` export); `None` if that is unclear.
    pub wasi: Option<World>,
    /// Why it cannot run under sockbox, if it cannot.
    pub problem: Option<String>,
    /// The policy uses its imports make possible (each still needs a grant).
    pub could_attempt: Vec<&'static str>,
}

impl Inspection {
    /// Conforms to the `sockbox:guest/server` world (or plain `wasi:cli/command`).
    pub fn conforms(&self) -> bool {
        self.problem.is_none()
    }
}

/// Resolves (see [`crate::guest::resolve`]) and type-checks `source` against the sandbox's
/// world (with the one linker every start uses).
pub fn inspect(source: &GuestSource) -> Result<Inspection> {
    let guest = crate::guest::resolve(source, &CompileCache::Off)?;
    let name = guest.name().to_string();
    let component = guest.component();
    let ty = component.component_type();
    let engine = compile::engine();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let problem = prepare(component, &name)
        .err()
        .map(|err| format!("{err:#}"));
    // Any version, and for TCP and UDP their `-create-socket` interfaces too.
    let has = |name: &str| imports.iter().any(|i| i.starts_with(unversioned(name)));
    let mut could_attempt = Vec::new();
    // WASI 0.3 has both socket kinds in one interface.
    let p3_sockets = imports
        .iter()
        .any(|i| i.starts_with("wasi:sockets/types@0.3"));
    if has(TCP) || p3_sockets {
        could_attempt.extend(["tcp-listen", "tcp-accept", "tcp-connect"]);
    }
    if has(UDP) || p3_sockets {
        could_attempt.extend(["udp-bind", "udp-send", "udp-recv"]);
    }
    if has(NAME_LOOKUP) {
        could_attempt.push("dns");
    }
    Ok(Inspection {
        wasi: world(component, &name).ok(),
        name,
        uses_control: imports_control(component),
        imports,
        exports,
        problem,
        could_attempt,
    })
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "guest: {}", self.name)?;
        writeln!(f, "imports:")?;
        for import in &self.imports {
            writeln!(f, "  {import}")?;
        }
        writeln!(f, "exports:")?;
        for export in &self.exports {
            writeln!(f, "  {export}")?;
        }
        match &self.problem {
            None if self.uses_control => {
                writeln!(f, "world: conforms to sockbox:guest/server (uses control)")?
            }
            None => writeln!(
                f,
                "world: a plain wasi:cli/command (no control: stopped without a graceful shutdown)"
            )?,
            Some(problem) => writeln!(f, "world: DOES NOT CONFORM: {problem}")?,
        }
        if let Some(wasi) = self.wasi {
            writeln!(f, "wasi: {wasi}")?;
        }
        if self.could_attempt.is_empty() {
            writeln!(f, "could attempt: no network use")?;
        } else {
            writeln!(
                f,
                "could attempt: {} (each only if granted)",
                self.could_attempt.join(", ")
            )?;
        }
        let fs = self.imports.iter().any(|i| i.starts_with(FILESYSTEM));
        if fs {
            writeln!(
                f,
                "filesystem: imported, but no directory is ever preopened"
            )?;
        }
        Ok(())
    }
}
