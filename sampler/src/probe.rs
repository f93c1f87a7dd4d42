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

/// Return addresses that latency probes hide. While a probed call runs, the kernel's return
/// probe has replaced its return address on the stack with the address of a trampoline, so a
/// stack copied meanwhile unwinds to the probed function and stops: the callers are lost, and
/// with a tail call out of the probed function (`jmp pthread_mutex_unlock`) the probed function
/// too. The entry probe reports each call's return address and where it lies
/// ([`critpath_common::CallEntryEvent`]); copies are mended with those of the calls still
/// running in their process, before they are unwound.
///
/// Threads' stacks do not overlap, so a slot address names its thread's frame within a
/// process. A call's entry is forgotten when the call returns (its thread's innermost running
/// call), when the same thread enters a probed call at or above its slot (the call ended unseen:
/// a lost event, a `longjmp`), or when the process execs or exits.
#[derive(Debug, Default)]
pub(crate) struct HiddenReturns {
    /// Per process: slot address → (thread, return address).
    by_pid: std::collections::HashMap<u32, std::collections::BTreeMap<u64, (u32, u64)>>,
    len: usize,
}

impl HiddenReturns {
    /// At most this many calls remembered at once (the kernel side holds as many in progress).
    const CAPACITY: usize = critpath_common::CALL_STARTS_CAPACITY as usize;

    /// Thread `tid` of `pid` entered a probed call whose return address `ret` lies at `slot`.
    pub(crate) fn enter(&mut self, pid: u32, tid: u32, slot: u64, ret: u64) {
        let calls = self.by_pid.entry(pid).or_default();
        // The thread's calls at or below this slot have ended.
        let ended: Vec<u64> = calls
            .range(..=slot)
            .filter(|(_, (t, _))| *t == tid)
            .map(|(&s, _)| s)
            .collect();
        for s in ended {
            calls.remove(&s);
            self.len -= 1;
        }
        if self.len < Self::CAPACITY {
            self.len += 1;
            calls.insert(slot, (tid, ret));
        }
    }

    /// A probed call of thread `tid` returned: its innermost running call.
    pub(crate) fn returned(&mut self, pid: u32, tid: u32) {
        let Some(calls) = self.by_pid.get_mut(&pid) else {
            return;
        };
        if let Some(slot) = calls.iter().find(|(_, (t, _))| *t == tid).map(|(&s, _)| s) {
            calls.remove(&slot);
            self.len -= 1;
        }
        if calls.is_empty() {
            self.by_pid.remove(&pid);
        }
    }

    /// Forgets the calls of a process (it exec'd or exited).
    pub(crate) fn forget(&mut self, pid: u32) {
        if let Some(calls) = self.by_pid.remove(&pid) {
            self.len -= calls.len();
        }
    }

    /// Keeps only the processes `keep` says still exist.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.by_pid.retain(|&pid, calls| {
            let k = keep(pid);
            if !k {
                self.len -= calls.len();
            }
            k
        });
    }

    /// Whether a copy of `len` bytes of `pid`'s memory from `base` holds a hidden return address.
    pub(crate) fn hides_in(&self, pid: u32, base: u64, len: usize) -> bool {
        self.slots(pid, base, len).next().is_some()
    }

    /// Puts the hidden return addresses back into `bytes`, a copy of `pid`'s memory from `base`.
    /// Returns how many were put back.
    pub(crate) fn restore(&self, pid: u32, base: u64, bytes: &mut [u8]) -> usize {
        let mut n = 0;
        for (slot, ret) in self.slots(pid, base, bytes.len()) {
            let at = (slot - base) as usize;
            bytes[at..at + 8].copy_from_slice(&ret.to_ne_bytes());
            n += 1;
        }
        n
    }

    /// The (slot, return address) pairs wholly inside `[base, base + len)`.
    fn slots(&self, pid: u32, base: u64, len: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        let end = base.saturating_add(len as u64).saturating_sub(7);
        self.by_pid
            .get(&pid)
            .into_iter()
            .flat_map(move |calls| calls.range(base..end.max(base)))
            .map(|(&slot, &(_, ret))| (slot, ret))
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

    /// A copy holding two running calls of one thread gets both return addresses back; one
    /// that ended (returned, or passed over by a later entry at its slot) is not put back, nor
    /// is another process's.
    #[test]
    fn hidden_returns_are_put_back_while_their_calls_run() {
        let trampoline = 0x7fff_f000_u64.to_ne_bytes();
        let copy = |base: u64| {
            let mut bytes = vec![0u8; 0x100];
            for at in [0x10, 0x80] {
                bytes[at..at + 8].copy_from_slice(&trampoline);
            }
            (base, bytes)
        };
        let word =
            |bytes: &[u8], at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
        let mut hidden = HiddenReturns::default();
        // Outer call at 0x1080, inner at 0x1010 (the stack grows down).
        hidden.enter(7, 70, 0x1080, 0x4000_1111);
        hidden.enter(7, 70, 0x1010, 0x4000_2222);
        // Another thread's call elsewhere, and another process's at the same address.
        hidden.enter(7, 71, 0x9000, 0x4000_3333);
        hidden.enter(8, 80, 0x1010, 0x4000_4444);
        let (base, mut bytes) = copy(0x1000);
        assert!(hidden.hides_in(7, base, bytes.len()));
        assert_eq!(hidden.restore(7, base, &mut bytes), 2);
        assert_eq!(
            (word(&bytes, 0x10), word(&bytes, 0x80)),
            (0x4000_2222, 0x4000_1111)
        );
        // A slot across the end of the copy is left alone.
        assert!(!hidden.hides_in(7, 0x1000, 0x14));
        // The inner call returns: only the outer is put back.
        hidden.returned(7, 70);
        let (_, mut bytes) = copy(base);
        assert_eq!(hidden.restore(7, base, &mut bytes), 1);
        assert_eq!(word(&bytes, 0x80), 0x4000_1111);
        // A new entry of the thread above the outer slot: the outer call ended unseen.
        hidden.enter(7, 70, 0x10c0, 0x4000_5555);
        let (_, mut bytes) = copy(base);
        assert_eq!(hidden.restore(7, base, &mut bytes), 1);
        assert_eq!(word(&bytes, 0x80), u64::from_ne_bytes(trampoline));
        // The process execs: nothing of it is put back; the other is untouched.
        hidden.forget(7);
        assert!(!hidden.hides_in(7, 0x1000, 0x10000));
        assert!(hidden.hides_in(8, base, 0x100));
        hidden.retain(|pid| pid != 8);
        assert_eq!(hidden.len, 0);
    }
}
