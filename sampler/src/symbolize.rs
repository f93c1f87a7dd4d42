//! Stack symbolization with blazesym.
//!
//! User addresses are first turned into (module, file offset) with the process's executable
//! mappings, read from `/proc/<pid>/maps` while the process is alive and kept afterwards, so a
//! process that exits before its samples are symbolized still resolves through its files. Frames
//! are then memoized per module, keyed by build-id (or path, inode and mtime when there is none),
//! so each distinct address of a library is symbolized once, whichever process ran it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazesym::symbolize::{
    self, Input, Symbolized,
    source::{Elf, Kernel, Source},
};
use critpath_analyzer::{Frame, FrameKind};
use critpath_common::{SampleEvent, StackSampleEvent};
use framehop::x86_64::CacheX86_64;

use crate::sys::{self, MapsEntry};
use crate::unwind::{self, ProcessUnwinder, UnwindTables, UserStack, Walk};

/// How often a live process's mappings are re-read at most (new `dlopen`s, `exec`).
const MAPS_REFRESH: Duration = Duration::from_secs(1);
/// How soon a new address outside every known mapping may trigger another re-read.
const MISS_REFRESH: Duration = Duration::from_millis(20);

/// Identity of a module's contents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ModuleKey {
    BuildId(String),
    File {
        path: String,
        inode: u64,
        mtime: i64,
    },
}

/// Symbols of one module, memoized by file offset.
struct Module {
    /// Path as the process mapped it (what users see).
    name: Arc<str>,
    /// Path to open for reading symbols.
    open_path: PathBuf,
    build_id: Option<String>,
    frames: HashMap<u64, Arc<[Frame]>>,
    /// Call-frame information, read at the first stack that needs it (`Some(None)`: none).
    unwind: Option<Option<Arc<UnwindTables>>>,
    /// File-offset ranges of its procedure linkage table (`.plt`, `.plt.sec`, `.plt.got`),
    /// read at the first address no symbol covers.
    plt: Option<Arc<[(u64, u64)]>>,
}

struct Process {
    maps: Vec<MapsEntry>,
    /// Index into `Symbolizer::modules` for each entry of `maps`.
    modules: Vec<usize>,
    read_at: Instant,
    /// Addresses outside every mapping even after a re-read: frame-pointer walks through code
    /// without frame pointers yield the same garbage on every stack, which must not cause a
    /// re-read each time. A new address (after an `exec` or `dlopen`) still does.
    misses: HashSet<u64>,
    /// The unwinder over `maps`, built at the first copied stack of the process.
    unwinder: Option<ProcessUnwinder>,
}

impl Process {
    /// The mapping holding `addr`, as an index into `maps`.
    fn mapping(&self, addr: u64) -> Option<usize> {
        self.maps
            .iter()
            .position(|m| (m.start..m.end).contains(&addr))
    }

    /// Whether an address outside every mapping may trigger a re-read of them: not a known
    /// miss, and not read too recently.
    fn may_reread_for(&self, addr: u64) -> bool {
        !self.misses.contains(&addr) && self.read_at.elapsed() >= MISS_REFRESH
    }
}

/// User stacks unwound for one process, and how many of them were truncated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnwindCounts {
    /// Thread name of the last stack seen.
    pub comm: String,
    /// Samples with a user context whose stack was unwound.
    pub stacks: u64,
    /// Those that could not be unwound to their first frame (and end in `[truncated]`).
    pub truncated: u64,
    /// Bytes of user stack the kernel copied for them.
    pub stack_bytes: u64,
}

/// Counters of what could not be resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizeStats {
    /// User addresses outside every known mapping.
    pub unmapped: u64,
    /// Addresses inside a module that no symbol covers.
    pub unresolved: u64,
    /// Processes whose mappings could not be read (exited before the first read).
    pub maps_unreadable: u64,
    /// User stacks unwound from copies (all processes, forgotten ones included).
    pub user_stacks: u64,
    /// Those that could not be unwound to their first frame.
    pub truncated_stacks: u64,
    /// Bytes of user stack the kernel copied for them.
    pub user_stack_bytes: u64,
}

/// A blazesym symbolizer with DWARF line info, inlined functions and demangling.
fn new_blaze() -> symbolize::Symbolizer {
    symbolize::Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

/// Turns raw stack addresses into [`Frame`]s, caching per process and per module.
pub struct Symbolizer {
    blaze: symbolize::Symbolizer,
    /// When `blaze` was made: it keeps every file it opened mapped and parsed, which
    /// [`Symbolizer::release_files`] lets go of.
    blaze_since: Instant,
    processes: HashMap<u32, Process>,
    modules: Vec<Module>,
    module_index: HashMap<ModuleKey, usize>,
    /// Module of each mapped file already seen, by (path, inode): refreshing a process's
    /// mappings then costs one read of its maps file, not a build-id read per library.
    file_index: HashMap<(String, u64), usize>,
    kernel: HashMap<u64, Arc<[Frame]>>,
    stats: SymbolizeStats,
    unwind_cache: CacheX86_64,
    unwind_counts: HashMap<u32, UnwindCounts>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer with DWARF line info, inlined functions and demangling enabled.
    pub fn new() -> Self {
        Self {
            blaze: new_blaze(),
            blaze_since: Instant::now(),
            processes: HashMap::new(),
            modules: Vec::new(),
            module_index: HashMap::new(),
            file_index: HashMap::new(),
            kernel: HashMap::new(),
            stats: SymbolizeStats::default(),
            unwind_cache: unwind::new_cache(),
            unwind_counts: HashMap::new(),
        }
    }

    /// What could not be resolved so far.
    pub fn stats(&self) -> SymbolizeStats {
        self.stats
    }

    /// Reads (or refreshes) a process's mappings now, e.g. as soon as it is first seen, so that
    /// its samples stay symbolizable after it exits.
    pub fn observe_process(&mut self, pid: u32) {
        if pid == 0 {
            return;
        }
        let stale = self
            .processes
            .get(&pid)
            .is_none_or(|p| p.read_at.elapsed() >= MAPS_REFRESH);
        if stale {
            self.refresh_maps(pid);
        }
    }

    /// A process exec'd: re-reads its mappings now (its old image is gone).
    pub fn process_exec(&mut self, pid: u32) {
        log::debug!("pid {pid} exec'd: its mappings will be re-read");
        // Re-read at the next sample rather than now: the new image's libraries are still being
        // mapped by its dynamic loader.
        self.processes.remove(&pid);
    }

    /// Forgets the processes not seen for `idle` (no sample, wait or wakeup of theirs needed
    /// their mappings): those that exited, and idle ones, whose mappings are read again at their
    /// next sample. Keeps an always-on symbolizer's memory bounded by the processes active
    /// recently rather than by every process ever seen. Returns how many were forgotten.
    pub fn forget_idle(&mut self, idle: Duration) -> usize {
        let stale: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, p)| p.read_at.elapsed() >= idle)
            .map(|(&pid, _)| pid)
            .collect();
        for &pid in &stale {
            self.forget_process(pid);
        }
        stale.len()
    }

    /// Lets go of the files opened for symbols (mapped and parsed: on a host running programs
    /// with large debug information, hundreds of MB that count in the agent's RSS) when they
    /// were opened `older_than` ago or more. The frames found so far stay memoized, so only a
    /// new address opens a file again. Returns whether they were released.
    pub fn release_files(&mut self, older_than: Duration) -> bool {
        if self.blaze_since.elapsed() < older_than {
            return false;
        }
        self.blaze = new_blaze();
        self.blaze_since = Instant::now();
        true
    }

    /// Forgets a process's mappings (after it exited and its samples were symbolized).
    pub fn forget_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.unwind_counts.remove(&pid);
    }

    fn refresh_maps(&mut self, pid: u32) -> bool {
        let maps = match sys::read_exec_maps(pid) {
            Ok(maps) => maps,
            Err(err) => {
                log::debug!("cannot read maps of pid {pid}: {err}");
                if let Some(p) = self.processes.get_mut(&pid) {
                    // Gone: keep the last mappings, stop retrying.
                    p.read_at = Instant::now();
                } else {
                    self.stats.maps_unreadable += 1;
                }
                return false;
            }
        };
        log::trace!("pid {pid}: {} executable mappings", maps.len());
        if maps.is_empty()
            && let Some(p) = self.processes.get_mut(&pid)
        {
            // An exiting process (or zombie) shows no mappings: keep the last ones, its samples
            // are still being symbolized.
            p.read_at = Instant::now();
            return false;
        }
        let modules = maps.iter().map(|m| self.module_for(pid, m)).collect();
        self.processes.insert(
            pid,
            Process {
                maps,
                modules,
                read_at: Instant::now(),
                misses: HashSet::new(),
                unwinder: None,
            },
        );
        true
    }

    fn module_for(&mut self, pid: u32, entry: &MapsEntry) -> usize {
        let file = (entry.path.clone(), entry.inode);
        if entry.inode != 0
            && let Some(&index) = self.file_index.get(&file)
        {
            return index;
        }
        let index = self.new_module(pid, entry);
        if entry.inode != 0 {
            self.file_index.insert(file, index);
        }
        index
    }

    fn new_module(&mut self, pid: u32, entry: &MapsEntry) -> usize {
        let open_path = if entry.path.starts_with('/')
            && sys::inode_of(Path::new(&entry.path)) == Some(entry.inode)
        {
            PathBuf::from(&entry.path)
        } else {
            // Another mount namespace, a deleted file, or a pseudo mapping: read it through
            // the process's own view while it lives.
            PathBuf::from(format!(
                "/proc/{pid}/map_files/{:x}-{:x}",
                entry.start, entry.end
            ))
        };
        let build_id = if entry.path.starts_with('[') {
            None
        } else {
            blazesym::helper::read_elf_build_id(&open_path)
                .ok()
                .flatten()
                .map(|id| hex(&id))
        };
        let key = match &build_id {
            Some(id) => ModuleKey::BuildId(id.clone()),
            None => ModuleKey::File {
                path: entry.path.clone(),
                inode: entry.inode,
                mtime: sys::mtime_of(&open_path).unwrap_or(0),
            },
        };
        if let Some(&index) = self.module_index.get(&key) {
            return index;
        }
        let index = self.modules.len();
        self.modules.push(Module {
            name: entry.path.as_str().into(),
            open_path,
            build_id,
            frames: HashMap::new(),
            unwind: None,
            plt: None,
        });
        self.module_index.insert(key, index);
        index
    }

    /// Symbolizes a user stack of process `pid`, innermost address first, appending frames
    /// innermost first to `out` (inlined functions expanded, innermost first).
    ///
    pub fn symbolize_user(&mut self, pid: u32, addrs: &[u64], out: &mut Vec<Frame>) {
        self.observe_process(pid);
        for addr in lookup_addrs(addrs) {
            self.symbolize_user_addr(pid, addr, out);
        }
    }

    fn symbolize_user_addr(&mut self, pid: u32, addr: u64, out: &mut Vec<Frame>) {
        let mut located = self.locate(pid, addr);
        let mut fresh = false;
        if located.is_none()
            && self
                .processes
                .get(&pid)
                .is_some_and(|p| p.may_reread_for(addr))
            && self.refresh_maps(pid)
        {
            fresh = true;
            located = self.locate(pid, addr);
        }
        let Some((module, file_offset)) = located else {
            self.stats.unmapped += 1;
            if log::log_enabled!(log::Level::Trace) {
                let p = self.processes.get(&pid);
                log::trace!(
                    "pid {pid}: {addr:#x} unmapped (fresh: {fresh}, maps read {:?} ago: {:x?})",
                    p.map(|p| p.read_at.elapsed()),
                    p.map(|p| p.maps.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>())
                );
            }
            if fresh && let Some(p) = self.processes.get_mut(&pid) {
                p.misses.insert(addr);
            }
            out.push(Frame::unknown(FrameKind::User, None, addr));
            return;
        };
        if let Some(frames) = self.modules[module].frames.get(&file_offset) {
            out.extend(frames.iter().rev().cloned());
            return;
        }
        let frames = self.resolve_in_module(module, file_offset);
        out.extend(frames.iter().rev().cloned());
        self.modules[module].frames.insert(file_offset, frames);
    }

    fn locate(&self, pid: u32, addr: u64) -> Option<(usize, u64)> {
        let p = self.processes.get(&pid)?;
        let i = p.mapping(addr)?;
        let m = &p.maps[i];
        Some((p.modules[i], addr - m.start + m.offset))
    }

    /// Whether `file_offset` lies in the module's procedure linkage table.
    fn in_plt(&mut self, module: usize, file_offset: u64) -> bool {
        let m = &mut self.modules[module];
        let ranges = m.plt.get_or_insert_with(|| plt_ranges(&m.open_path).into());
        ranges
            .iter()
            .any(|&(start, end)| (start..end).contains(&file_offset))
    }

    /// Frames for one address, outermost first.
    fn resolve_in_module(&mut self, module: usize, file_offset: u64) -> Arc<[Frame]> {
        let m = &self.modules[module];
        let name = m.name.to_string();
        let (open_path, build_id) = (m.open_path.clone(), m.build_id.clone());
        let unknown = || -> Arc<[Frame]> {
            [Frame::unknown(FrameKind::User, Some(&name), file_offset)].into()
        };
        if name.starts_with('[') {
            // [vdso] and friends: no file to read.
            return unknown();
        }
        let src = Source::Elf(Elf::new(&open_path));
        let result = self
            .blaze
            .symbolize_single(&src, Input::FileOffset(file_offset));
        // Whether the address lies past the end of the symbol found (`None`: its size is not
        // known, or 0 as for some hand-written assembly), and the frames it names.
        let (past_end, frames) = match result {
            Ok(Symbolized::Sym(sym)) => {
                let base = Frame {
                    function: String::new(),
                    module: Some(name.clone()),
                    build_id,
                    file: None,
                    line: None,
                    kind: FrameKind::User,
                    inlined: false,
                };
                let size = sym.size.filter(|&size| size > 0);
                (size.map(|size| sym.offset >= size), expand(base, &sym))
            }
            Ok(Symbolized::Unknown(reason)) => {
                log::trace!("{name}+{file_offset:#x}: {reason}");
                self.stats.unresolved += 1;
                return unknown();
            }
            Err(err) => {
                log::debug!("symbolizing {name}+{file_offset:#x}: {err}");
                self.stats.unresolved += 1;
                return unknown();
            }
        };
        // Past the end of the symbol found, no symbol covers the address: blazesym gives the
        // nearest one before it. A stub of the procedure linkage table, where a call to a
        // shared library passes (after `_init` or `_fini` in the file), is named so; anything
        // else past a symbol's end is unknown rather than a guess.
        if past_end != Some(false) && self.in_plt(module, file_offset) {
            let mut frame = Frame::unknown(FrameKind::User, Some(&name), file_offset);
            frame.function = PLT.to_owned();
            return [frame].into();
        }
        if past_end == Some(true) {
            self.stats.unresolved += 1;
            return unknown();
        }
        frames
    }

    /// The full stack of an event as frames, root first: user frames from the outermost caller
    /// down, then kernel frames from the system call entry down to the sampled instruction.
    pub fn symbolize_event(&mut self, event: &SampleEvent) -> Vec<Frame> {
        self.symbolize_stacks(event.header.pid, event.user_frames(), event.kernel_frames())
    }

    /// As [`Self::symbolize_event`] for a sample with a copied user stack: the user stack is
    /// unwound with its modules' call-frame information first. A user stack that could not be
    /// unwound to its first frame starts with a [`Frame::truncated`] marker.
    pub fn symbolize_stack_event(&mut self, event: &StackSampleEvent) -> Vec<Frame> {
        // A kernel thread, or a sample taken before the task had user registers.
        let user = (event.regs.ip != 0).then(|| UserStack::of_sample(event));
        self.symbolize_copied(
            event.header.pid,
            user.as_ref(),
            event.kernel_frames(),
            event.header.comm_bytes(),
        )
    }

    /// A copied user stack (`None`: the thread has no user context) unwound with call-frame
    /// information, and a kernel stack (innermost first), as frames, root first. A user stack
    /// that could not be unwound to its first frame starts with a [`Frame::truncated`] marker.
    /// The unwinding is counted for process `pid`, named `comm`.
    pub fn symbolize_copied(
        &mut self,
        pid: u32,
        user: Option<&UserStack<'_>>,
        kernel: &[u64],
        comm: &[u8],
    ) -> Vec<Frame> {
        let mut addrs = Vec::with_capacity(32);
        let complete = user.is_some_and(|copy| self.unwind(copy, &mut addrs));
        if let Some(copy) = user {
            let (truncated, bytes) = (u64::from(!complete), copy.bytes.len() as u64);
            self.stats.user_stacks += 1;
            self.stats.truncated_stacks += truncated;
            self.stats.user_stack_bytes += bytes;
            let counts = self.unwind_counts.entry(pid).or_default();
            counts.stacks += 1;
            counts.truncated += truncated;
            counts.stack_bytes += bytes;
            if counts.comm.as_bytes() != comm {
                counts.comm = String::from_utf8_lossy(comm).into_owned();
            }
        }
        let mut frames = Vec::with_capacity(32);
        self.symbolize_kernel(kernel, &mut frames);
        if !addrs.is_empty() {
            self.symbolize_user(pid, &addrs, &mut frames);
        }
        if user.is_some() && !complete {
            frames.push(Frame::truncated());
        }
        frames.reverse();
        frames
    }

    /// A user stack that is known to exist but could not be captured (its copy was lost), and
    /// a kernel stack, as frames, root first: the user part is a single [`Frame::truncated`]
    /// marker, counted as a truncated stack of process `pid`.
    pub fn symbolize_lost_user(&mut self, pid: u32, kernel: &[u64], comm: &[u8]) -> Vec<Frame> {
        self.stats.user_stacks += 1;
        self.stats.truncated_stacks += 1;
        let counts = self.unwind_counts.entry(pid).or_default();
        counts.stacks += 1;
        counts.truncated += 1;
        if counts.comm.as_bytes() != comm {
            counts.comm = String::from_utf8_lossy(comm).into_owned();
        }
        let mut frames = Vec::with_capacity(32);
        self.symbolize_kernel(kernel, &mut frames);
        frames.push(Frame::truncated());
        frames.reverse();
        frames
    }

    /// Stacks unwound and truncated per process so far (pids of exited processes included until
    /// [`Self::forget_process`]; the totals, which never decrease, are in [`Self::stats`]).
    pub fn unwind_counts(&self) -> &HashMap<u32, UnwindCounts> {
        &self.unwind_counts
    }

    /// Unwinds a copied user stack into `out` (innermost first); see [`crate::unwind`]. A walk
    /// that leaves the known mappings re-reads them once (a library mapped since, e.g. while
    /// the program was still starting when first seen) and walks again.
    fn unwind(&mut self, copy: &UserStack<'_>, out: &mut Vec<u64>) -> bool {
        let pid = copy.pid;
        self.observe_process(pid);
        let mut refreshed = false;
        loop {
            let Some(process) = self.processes.get_mut(&pid) else {
                out.push(copy.regs.ip);
                return false;
            };
            if process.unwinder.is_none() {
                let modules = &mut self.modules;
                let tables: Vec<Option<Arc<UnwindTables>>> = process
                    .modules
                    .iter()
                    .map(|&m| {
                        let module = &mut modules[m];
                        if module.name.starts_with('[') {
                            return None;
                        }
                        module
                            .unwind
                            .get_or_insert_with(|| UnwindTables::open(&module.open_path))
                            .clone()
                    })
                    .collect();
                process.unwinder = Some(ProcessUnwinder::new(
                    process.maps.iter().zip(tables.iter().map(Option::as_ref)),
                ));
            }
            let unwinder = process.unwinder.as_ref().expect("built above");
            let is_mapped = |addr| process.mapping(addr).is_some();
            let walk = unwinder.unwind(&mut self.unwind_cache, copy, is_mapped, out);
            match walk {
                Walk::Complete => return true,
                Walk::Truncated => {}
                Walk::Unmapped(addr) => {
                    if !refreshed && process.may_reread_for(addr) && self.refresh_maps(pid) {
                        refreshed = true;
                        out.clear();
                        continue;
                    }
                    if refreshed && let Some(p) = self.processes.get_mut(&pid) {
                        // Still outside after a fresh read: not a new library; do not re-read
                        // for this address again.
                        p.misses.insert(addr);
                    }
                }
            }
            if out.is_empty() {
                out.push(copy.regs.ip);
            }
            return false;
        }
    }

    /// A user and a kernel stack of process `pid` (each innermost first) as frames, root first.
    pub fn symbolize_stacks(&mut self, pid: u32, user: &[u64], kernel: &[u64]) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(32);
        self.symbolize_kernel(kernel, &mut frames);
        if !user.is_empty() {
            self.symbolize_user(pid, user, &mut frames);
        }
        frames.reverse();
        frames
    }

    /// Loads the kernel's symbols now (tens of milliseconds to parse kallsyms) rather than at
    /// the first kernel sample, so the cost lands at start-up, not in the middle of a recording.
    pub fn preload_kernel(&mut self) {
        // Any address loads the symbol table; the answer is discarded.
        let _ = self
            .blaze
            .symbolize(&kernel_source(), Input::AbsAddr(&[0xffff_ffff_8100_0000]));
    }

    /// Symbolizes a kernel stack, innermost first, appending frames innermost first.
    pub fn symbolize_kernel(&mut self, addrs: &[u64], out: &mut Vec<Frame>) {
        let missing: Vec<u64> = lookup_addrs(addrs)
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        if !missing.is_empty() {
            let resolved = self
                .blaze
                .symbolize(&kernel_source(), Input::AbsAddr(&missing))
                .unwrap_or_default();
            for (i, &addr) in missing.iter().enumerate() {
                let frames: Arc<[Frame]> = match resolved.get(i) {
                    Some(Symbolized::Sym(sym)) => {
                        let module = sym
                            .module
                            .as_ref()
                            .map(|m| m.to_string_lossy().into_owned())
                            .filter(|m| !m.is_empty() && !m.contains("kallsyms"))
                            .map(|m| format!("[{}]", m.trim_matches(['[', ']'])))
                            .unwrap_or_else(|| critpath_analyzer::KERNEL_MODULE.to_owned());
                        let mut base = Frame::kernel("");
                        base.module = Some(module);
                        expand(base, sym)
                    }
                    _ => {
                        self.stats.unresolved += 1;
                        [Frame::unknown(
                            FrameKind::Kernel,
                            Some(critpath_analyzer::KERNEL_MODULE),
                            addr,
                        )]
                        .into()
                    }
                };
                self.kernel.insert(addr, frames);
            }
        }
        for a in lookup_addrs(addrs) {
            if let Some(frames) = self.kernel.get(&a) {
                out.extend(frames.iter().rev().cloned());
            }
        }
    }
}

/// The addresses to look up for a stack, innermost first: the first is the sampled instruction,
/// every later one a return address, moved back by one byte into its call instruction (so a
/// call ending a function or an inlined range resolves to the caller's line, not the next one).
fn lookup_addrs(stack: &[u64]) -> impl Iterator<Item = u64> + '_ {
    stack
        .iter()
        .enumerate()
        .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
}

/// Kernel symbols come from kallsyms (vmlinux images are rarely installed; they would add file
/// and line information).
fn kernel_source() -> Source<'static> {
    Source::Kernel(Kernel {
        vmlinux: blazesym::MaybeDefault::None,
        debug_syms: false,
        ..Kernel::default()
    })
}

/// A symbol and its inlined callees as frames, outermost first.
/// The name of a frame in a procedure linkage table stub.
pub const PLT: &str = "[plt]";

/// File-offset ranges of the `.plt*` sections of an ELF file; none when it cannot be read.
fn plt_ranges(path: &Path) -> Vec<(u64, u64)> {
    use object::{Object as _, ObjectSection as _};
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    // SAFETY: a read-only private mapping of a file the process maps too, read for its
    // section headers only (`object` bounds-checks every read; see the unwinder's tables).
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return Vec::new();
    };
    let Ok(file) = object::File::parse(&*map) else {
        return Vec::new();
    };
    file.sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".plt")))
        .filter_map(|s| s.file_range())
        .map(|(start, len)| (start, start + len))
        .collect()
}

fn expand(base: Frame, sym: &symbolize::Sym<'_>) -> Arc<[Frame]> {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    let code = |c: Option<&symbolize::CodeInfo<'_>>| {
        (
            c.map(|c| c.to_path().to_string_lossy().into_owned()),
            c.and_then(|c| c.line),
        )
    };
    // The symbol's own code info is the location of the address; with inlining, each inlined
    // function's call site belongs to its caller.
    let (file, line) = code(
        sym.inlined
            .first()
            .and_then(|f| f.code_info.as_ref())
            .or(sym.code_info.as_deref()),
    );
    frames.push(Frame {
        function: sym.name.to_string(),
        file,
        line,
        ..base.clone()
    });
    for (i, f) in sym.inlined.iter().enumerate() {
        let location = sym
            .inlined
            .get(i + 1)
            .and_then(|next| next.code_info.as_ref())
            .or(if i + 1 == sym.inlined.len() {
                sym.code_info.as_deref()
            } else {
                None
            });
        let (file, line) = code(location);
        frames.push(Frame {
            function: f.name.to_string(),
            file,
            line,
            inlined: true,
            ..base.clone()
        });
    }
    frames.into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> u64 {
        std::hint::black_box(42)
    }

    /// An address of this very test binary resolves to its function name, with the binary as
    /// module and a build-id; a wild address becomes an `[unknown]` frame, never a panic.
    #[test]
    fn symbolizes_own_function() {
        let addr = marker_function_for_symbolizer_test as *const () as u64;
        let mut s = Symbolizer::new();
        let mut out = Vec::new();
        s.symbolize_user(std::process::id(), &[addr + 1], &mut out);
        let names: Vec<_> = out.iter().map(|f| f.function.as_str()).collect();
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("marker_function_for_symbolizer_test")),
            "{names:?}"
        );
        assert!(
            out[0]
                .module
                .as_deref()
                .unwrap()
                .contains("critpath_sampler")
        );
        assert!(out[0].build_id.is_some(), "rustc links a build id");

        out.clear();
        s.symbolize_user(std::process::id(), &[0x10], &mut out);
        assert_eq!(out[0].function, "[unknown] 0x10");
        assert_eq!(s.stats().unmapped, 1);
    }

    /// Files opened for symbols are let go of only when old enough, and symbolizing goes on
    /// after: a new address opens the file again.
    /// An address in a stub of this test binary's procedure linkage table is named `[plt]`,
    /// not after the symbol before the table (`_init`).
    #[test]
    fn plt_stubs_are_named_not_guessed() {
        let me = std::env::current_exe().unwrap();
        let plt = plt_ranges(&me);
        let &(start, end) = plt.first().expect("a .plt section");
        let offset = start + (end - start) / 2;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let me = me.to_string_lossy().into_owned();
        // The mapping of the executable that holds that file offset.
        let addr = maps
            .lines()
            .filter(|l| l.ends_with(&me))
            .find_map(|l| {
                let mut it = l.split_whitespace();
                let (range, _, off) = (it.next()?, it.next()?, it.next()?);
                let (lo, hi) = range.split_once('-')?;
                let (lo, hi) = (
                    u64::from_str_radix(lo, 16).ok()?,
                    u64::from_str_radix(hi, 16).ok()?,
                );
                let off = u64::from_str_radix(off, 16).ok()?;
                (off..off + (hi - lo))
                    .contains(&offset)
                    .then(|| lo + offset - off)
            })
            .expect("the .plt mapped");
        let mut s = Symbolizer::new();
        let mut out = Vec::new();
        s.symbolize_user(std::process::id(), &[addr], &mut out);
        let names: Vec<_> = out.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, [PLT], "{out:?}");
    }

    #[test]
    fn releases_its_files_and_goes_on() {
        let mut s = Symbolizer::new();
        let pid = std::process::id();
        let name = |s: &mut Symbolizer, addr: u64| {
            let mut out = Vec::new();
            s.symbolize_user(pid, &[addr + 1], &mut out);
            out.iter().map(|f| f.function.clone()).collect::<Vec<_>>()
        };
        let marker = marker_function_for_symbolizer_test as *const () as u64;
        assert!(
            name(&mut s, marker)
                .iter()
                .any(|n| n.ends_with("marker_function_for_symbolizer_test"))
        );
        assert!(!s.release_files(Duration::from_secs(3600)));
        assert!(s.release_files(Duration::ZERO));
        let other = releases_its_files_and_goes_on as *const () as u64;
        let names = name(&mut s, other);
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("releases_its_files_and_goes_on")),
            "{names:?}"
        );
    }

    /// Processes not seen for the idle time are forgotten, with their unwinding counts; recent
    /// ones are kept.
    #[test]
    fn forgets_idle_processes() {
        let mut s = Symbolizer::new();
        let pid = std::process::id();
        s.observe_process(pid);
        s.unwind_counts.insert(pid, UnwindCounts::default());
        assert_eq!(s.forget_idle(Duration::from_secs(3600)), 0);
        assert!(s.processes.contains_key(&pid));
        assert_eq!(s.forget_idle(Duration::ZERO), 1);
        assert!(s.processes.is_empty() && s.unwind_counts.is_empty());
    }

    /// Kernel addresses from kallsyms resolve to kernel function names.
    #[test]
    fn symbolizes_kernel_address() {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let addr = kallsyms
            .lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                let (a, _, name) = (it.next()?, it.next()?, it.next()?);
                (name == "vfs_write").then(|| u64::from_str_radix(a, 16).ok())?
            })
            .expect("vfs_write in kallsyms");
        if addr == 0 {
            // kptr_restrict hides addresses from non-root users.
            assert!(
                std::env::var("CI").is_err(),
                "kallsyms addresses hidden under CI"
            );
            eprintln!("skipped: kallsyms addresses are hidden (not root)");
            return;
        }
        let mut s = Symbolizer::new();
        let mut out = Vec::new();
        s.symbolize_kernel(&[addr + 4], &mut out);
        assert_eq!(out[0].function, "vfs_write");
        assert_eq!(out[0].kind, FrameKind::Kernel);
    }
}
