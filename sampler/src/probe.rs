//! Latency probes: which function of which binary to time, and finding it there.

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSymbol as _};

use crate::Error;

/// A function to time at every call: a uprobe at its entry, a uretprobe at its return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The executable or shared library.
    pub binary: PathBuf,
    /// The function: its symbol, or a Rust path as demangled without the hash
    /// (`server::handle_request`).
    pub function: String,
}

impl std::str::FromStr for Probe {
    type Err = String;

    /// `BINARY:FUNCTION`; the function may contain `::` (the first single `:` after the binary
    /// splits them).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected BINARY:FUNCTION, e.g. ./server:handle_request, not {s:?}");
        // The binary ends at the first ':' that is not part of a '::'.
        let bytes = s.as_bytes();
        let split = (0..bytes.len()).find(|&i| {
            bytes[i] == b':' && bytes.get(i + 1) != Some(&b':') && (i == 0 || bytes[i - 1] != b':')
        });
        let Some(i) = split else { return Err(bad()) };
        let (binary, function) = (&s[..i], &s[i + 1..]);
        if binary.is_empty() || function.is_empty() {
            return Err(bad());
        }
        Ok(Probe {
            binary: PathBuf::from(binary),
            function: function.to_owned(),
        })
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.binary.display(), self.function)
    }
}

/// The symbol to attach to for `function` in `binary`: the symbol itself, or the one symbol
/// whose demangled name (without its hash) is `function`.
///
/// # Errors
/// The binary cannot be read or parsed, no function has that name, or several different ones
/// do.
pub fn resolve(binary: &Path, function: &str) -> Result<String, Error> {
    let io = |source| Error::Io {
        what: binary.display().to_string(),
        source,
    };
    let data = std::fs::read(binary).map_err(io)?;
    let file = object::File::parse(&*data).map_err(|e| Error::Probe {
        probe: format!("{}:{function}", binary.display()),
        reason: format!("not an object file: {e}"),
    })?;
    let mut found: Vec<(String, u64)> = Vec::new();
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() != object::SymbolKind::Text || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let matches = name == function
            || rustc_demangle::try_demangle(name).is_ok_and(|d| format!("{d:#}") == function);
        if matches && !found.iter().any(|(_, a)| *a == sym.address()) {
            found.push((name.to_owned(), sym.address()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0).0),
        0 => Err(Error::Probe {
            probe: format!("{}:{function}", binary.display()),
            reason: "no such function in the binary's symbol tables (inlined, or stripped?)".into(),
        }),
        n => Err(Error::Probe {
            probe: format!("{}:{function}", binary.display()),
            reason: format!(
                "{n} different functions have this name; give the symbol: {}",
                found
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_function() {
        let p: Probe = "./srv:handle".parse().unwrap();
        assert_eq!(
            (p.binary, p.function.as_str()),
            (PathBuf::from("./srv"), "handle")
        );
        let p: Probe = "/bin/app:app::server::handle".parse().unwrap();
        assert_eq!(p.function, "app::server::handle");
        for bad in ["app", ":f", "app:", "a::b"] {
            assert!(bad.parse::<Probe>().is_err(), "{bad}");
        }
    }

    /// This test binary's own functions are found by their Rust path, and a missing one is an
    /// error naming it.
    #[test]
    fn finds_rust_functions_by_path() {
        let me = std::env::current_exe().unwrap();
        let symbol = resolve(&me, "critpath_sampler::probe::resolve").unwrap();
        assert!(
            symbol.starts_with("_ZN") || symbol.starts_with("_R"),
            "{symbol}"
        );
        let err = resolve(&me, "critpath_sampler::no_such_function").unwrap_err();
        assert!(err.to_string().contains("no such function"), "{err}");
    }
}
