//! Unwinding user stacks with call-frame information (`.eh_frame`, `.debug_frame`), for code
//! built without frame pointers: most distribution packages, and Rust's release profile.
//!
//! The eBPF program copies the user registers and the top of the user stack with each sample
//! ([`StackSampleEvent`]); here framehop replays the modules' unwind rules over that copy. Each
//! module file is mapped once and its unwind sections shared by every process that maps it (the
//! tables are read from the page cache on demand, not parsed up front), so a dozen processes
//! using the same libc cost one mapping of libc. Why unwinding happens here rather than in the
//! kernel is in `docs/unwinding.md`.
//!
//! A stack is *complete* when the unwinder reaches a frame whose call-frame information marks the
//! end of the stack (`_start`, a thread's `clone3`) or a null return address, with every frame
//! inside a known executable mapping. A walk that ends because a frame-pointer guess found a
//! null `rbp` is not complete: in code without frame pointers `rbp` is an ordinary register and
//! is often zero. Anything else — a read past the copied window, a frame outside every
//! module, a loop, more than [`MAX_STACK_DEPTH`] frames — ends the stack where it went wrong, and
//! the caller puts a [`critpath_analyzer::TRUNCATED`] marker at its root.

use std::fs::File;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

use critpath_common::{MAX_STACK_DEPTH, StackSampleEvent, UserRegs, WaitStackEvent};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use memmap2::Mmap;
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use crate::sys::MapsEntry;

/// A copied user stack, as the eBPF programs take it with an on-CPU sample
/// ([`StackSampleEvent`]) or an off-CPU wait ([`WaitStackEvent`]): the registers saved when
/// the thread entered the kernel, and the stack from `base` (the stack pointer's page) up.
#[derive(Clone, Copy, Debug)]
pub struct UserStack<'a> {
    /// Process whose stack it is.
    pub pid: u32,
    /// Instruction, stack and frame pointer.
    pub regs: UserRegs,
    /// User address of `bytes[0]`.
    pub base: u64,
    /// The copy.
    pub bytes: &'a [u8],
}

impl<'a> UserStack<'a> {
    /// The copy of an on-CPU sample.
    pub fn of_sample(event: &'a StackSampleEvent) -> Self {
        Self {
            pid: event.header.pid,
            regs: event.regs,
            base: event.user_stack_base,
            bytes: event.user_stack(),
        }
    }

    /// The copy a [`WaitStackEvent`] record holds, read in place from the record's bytes
    /// (without copying its 36 KiB), with the record's role, blocked thread and wait start;
    /// `None` when the record is too short for what it claims.
    pub fn of_wait_record(record: &'a [u8]) -> Option<(u32, u32, u64, Self)> {
        use std::mem::offset_of;
        let header = record.get(..critpath_common::WAIT_STACK_HEADER_BYTES)?;
        let u32_at = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_ne_bytes(header[at..at + 8].try_into().expect("8"));
        let regs = offset_of!(WaitStackEvent, regs);
        let pages = u32_at(offset_of!(WaitStackEvent, user_stack_pages)) as usize;
        let len = pages.min(critpath_common::USER_STACK_MAX_PAGES) * critpath_common::PAGE_SIZE;
        let start = offset_of!(WaitStackEvent, user_stack);
        let stack = Self {
            pid: u32_at(offset_of!(WaitStackEvent, pid)),
            regs: UserRegs {
                ip: u64_at(regs + offset_of!(UserRegs, ip)),
                sp: u64_at(regs + offset_of!(UserRegs, sp)),
                bp: u64_at(regs + offset_of!(UserRegs, bp)),
            },
            base: u64_at(offset_of!(WaitStackEvent, user_stack_base)),
            bytes: record.get(start..start + len)?,
        };
        Some((
            u32_at(offset_of!(WaitStackEvent, role)),
            u32_at(offset_of!(WaitStackEvent, tid)),
            u64_at(offset_of!(WaitStackEvent, start_ns)),
            stack,
        ))
    }

    /// An owned copy of what the unwinder can use: the stack from the stack pointer up.
    pub fn to_owned(&self) -> OwnedUserStack {
        let from = usize::try_from(self.regs.sp.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        OwnedUserStack {
            pid: self.pid,
            regs: self.regs,
            base: self.base + from as u64,
            bytes: self.bytes[from..].into(),
        }
    }
}

/// A [`UserStack`] kept until it is needed (the copy of a wait, until the wait is known to be
/// long enough to report), trimmed to the live part of the stack.
#[derive(Clone, Debug)]
pub struct OwnedUserStack {
    pid: u32,
    regs: UserRegs,
    base: u64,
    bytes: Box<[u8]>,
}

impl OwnedUserStack {
    /// The copy, to unwind.
    pub fn as_stack(&self) -> UserStack<'_> {
        UserStack {
            pid: self.pid,
            regs: self.regs,
            base: self.base,
            bytes: &self.bytes,
        }
    }

    /// The process whose stack it is.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing of the stack was copied.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A section of a mapped module file: what framehop reads unwind rules and code from.
#[derive(Clone)]
pub(crate) struct Section {
    file: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for Section {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.file[self.range.clone()]
    }
}

/// The unwind-relevant sections of one module file, and how its file offsets map to addresses.
pub(crate) struct UnwindTables {
    file: Arc<Mmap>,
    text: Option<(Range<u64>, Range<usize>)>,
    eh_frame: Option<(Range<u64>, Range<usize>)>,
    eh_frame_hdr: Option<(Range<u64>, Range<usize>)>,
    got: Option<Range<u64>>,
    debug_frame: Option<Range<usize>>,
    /// Loadable segments: file range, stated address of its first byte, executable.
    segments: Vec<(Range<u64>, u64, bool)>,
}

impl UnwindTables {
    /// Maps `path` and finds its unwind sections. `None` when it is not an ELF file or has no
    /// call-frame information at all (then its frames fall back to frame pointers).
    pub(crate) fn open(path: &Path) -> Option<Arc<Self>> {
        let file = File::open(path)
            .inspect_err(|e| log::debug!("cannot open {} for unwinding: {e}", path.display()))
            .ok()?;
        // SAFETY: the mapping is read-only and private. A module file rewritten in place while
        // mapped could change under us, as it would under the process running it; framehop
        // bounds-checks every read, so that gives wrong frames, never unsafety beyond a SIGBUS
        // on truncation, which package managers avoid by replacing files rather than
        // truncating them.
        let map = Arc::new(unsafe { Mmap::map(&file) }.ok()?);
        let elf = object::File::parse(&**map)
            .inspect_err(|e| log::debug!("{}: not an object file: {e}", path.display()))
            .ok()?;
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            // Compressed sections (`.debug_frame` in some debug builds) are not mapped as is.
            if s.compressed_file_range().ok()?.format != object::CompressionFormat::None {
                return None;
            }
            let (offset, size) = s.file_range()?;
            Some((
                s.address()..s.address() + s.size(),
                offset as usize..(offset + size) as usize,
            ))
        };
        let tables = Self {
            text: section(".text"),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            got: section(".got").map(|(addresses, _)| addresses),
            debug_frame: section(".debug_frame").map(|(_, bytes)| bytes),
            segments: elf
                .segments()
                .map(|seg| {
                    let (offset, size) = seg.file_range();
                    let executable = matches!(
                        seg.flags(),
                        object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0
                    );
                    (offset..offset + size, seg.address(), executable)
                })
                .collect(),
            file: Arc::clone(&map),
        };
        if tables.eh_frame.is_none() && tables.debug_frame.is_none() {
            log::debug!("{}: no call-frame information", path.display());
            return None;
        }
        Some(Arc::new(tables))
    }

    fn section(&self, bytes: &Range<usize>) -> Option<Section> {
        (bytes.end <= self.file.len()).then(|| Section {
            file: Arc::clone(&self.file),
            range: bytes.clone(),
        })
    }

    /// Where the file's stated address 0 lands when `entry` maps it: from the segment the
    /// mapping holds (the executable one when it holds several; mappings start at a page
    /// boundary, so the segment itself may start further in).
    fn base_avma(&self, entry: &MapsEntry) -> Option<u64> {
        let mapped = entry.offset..entry.offset + (entry.end - entry.start);
        let overlaps = |range: &Range<u64>| range.start < mapped.end && mapped.start < range.end;
        let (range, stated, _) = self
            .segments
            .iter()
            .filter(|(range, _, _)| overlaps(range))
            .max_by_key(|(_, _, executable)| *executable)?;
        // avma(o) = start + (o - offset) and svma(o) = stated + (o - range.start) for a file
        // offset o of the segment: base = avma - svma.
        (entry.start + range.start)
            .checked_sub(entry.offset)?
            .checked_sub(*stated)
    }

    /// Whether call-frame information covers the stated address `svma` (an FDE contains it).
    fn covers(&self, svma: u64) -> bool {
        use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindSection as _};
        let (Some((hdr_addr, hdr)), Some((frame_addr, frame))) =
            (&self.eh_frame_hdr, &self.eh_frame)
        else {
            return false;
        };
        let (Some(hdr), Some(frame)) = (self.file.get(hdr.clone()), self.file.get(frame.clone()))
        else {
            return false;
        };
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(hdr_addr.start)
            .set_eh_frame(frame_addr.start);
        let Ok(hdr) = EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8) else {
            return false;
        };
        let Some(table) = hdr.table() else {
            return false;
        };
        let frame = EhFrame::new(frame, LittleEndian);
        table
            .fde_for_address(&frame, &bases, svma, EhFrame::cie_from_offset)
            .is_ok()
    }

    /// The framehop module for this file mapped by `entry`.
    fn module(&self, entry: &MapsEntry) -> Option<Module<Section>> {
        let base_avma = self.base_avma(entry)?;
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.as_ref().map(|(a, _)| a.clone()),
            text: self.text.as_ref().and_then(|(_, b)| self.section(b)),
            got_svma: self.got.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(a, _)| a.clone()),
            eh_frame: self.eh_frame.as_ref().and_then(|(_, b)| self.section(b)),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(a, _)| a.clone()),
            eh_frame_hdr: self
                .eh_frame_hdr
                .as_ref()
                .and_then(|(_, b)| self.section(b)),
            debug_frame: self.debug_frame.as_ref().and_then(|b| self.section(b)),
            stubs_svma: None,
            stub_helper_svma: None,
            unwind_info: None,
            text_segment_svma: None,
            text_segment: None,
        };
        Some(Module::new(
            entry.path.clone(),
            entry.start..entry.end,
            base_avma,
            info,
        ))
    }
}

/// One process's modules, as framehop needs them.
pub(crate) struct ProcessUnwinder {
    unwinder: UnwinderX86_64<Section>,
    /// The mapped modules with call-frame information: address range, base, tables.
    modules: Vec<(Range<u64>, u64, Arc<UnwindTables>)>,
}

impl ProcessUnwinder {
    /// An unwinder over the executable mappings `maps`, each with the tables of its file
    /// (`None` for a file without call-frame information, such as JIT code or `[vdso]`).
    pub(crate) fn new<'a>(
        maps: impl IntoIterator<Item = (&'a MapsEntry, Option<&'a Arc<UnwindTables>>)>,
    ) -> Self {
        let mut unwinder = UnwinderX86_64::new();
        let mut modules = Vec::new();
        for (entry, tables) in maps {
            let Some(tables) = tables else { continue };
            if let Some(module) = tables.module(entry) {
                modules.push((module.avma_range(), module.base_avma(), Arc::clone(tables)));
                unwinder.add_module(module);
            }
        }
        Self { unwinder, modules }
    }

    /// Whether call-frame information covers the code address `avma`.
    fn covers(&self, avma: u64) -> bool {
        self.modules
            .iter()
            .find(|(range, _, _)| range.contains(&avma))
            .is_some_and(|(_, base, tables)| tables.covers(avma - base))
    }

    /// Unwinds a sample's user stack into `out`, innermost address first (the sampled
    /// instruction, then return addresses), and says how the walk ended (see the module docs);
    /// `is_mapped` tells whether an address lies in a known executable mapping.
    pub(crate) fn unwind(
        &self,
        cache: &mut CacheX86_64,
        copy: &UserStack<'_>,
        is_mapped: impl Fn(u64) -> bool,
        out: &mut Vec<u64>,
    ) -> Walk {
        let stack = copy.bytes;
        if stack.is_empty() {
            return Walk::Truncated;
        }
        let base = copy.base;
        let regs = copy.regs;
        // Only what lies at or above the stack pointer is the task's stack; below it is dead.
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            if addr < regs.sp || !addr.is_multiple_of(8) {
                return Err(());
            }
            let at = usize::try_from(addr - base).map_err(|_| ())?;
            let bytes = stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        };
        let mut frames = self.unwinder.iter_frames(
            regs.ip,
            UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
            cache,
            &mut read_stack,
        );
        // The code address of the outermost frame so far (a return address moved into its call).
        let mut outermost = None;
        loop {
            match frames.next() {
                Ok(Some(frame)) => {
                    let lookup = frame.address_for_lookup();
                    if !is_mapped(lookup) {
                        // A frame-pointer guess through code without frame pointers, code no
                        // module covers, or a library mapped since the mappings were read:
                        // nothing above it can be trusted.
                        return Walk::Unmapped(lookup);
                    }
                    if out.len() == MAX_STACK_DEPTH {
                        return Walk::Truncated;
                    }
                    out.push(frame.address());
                    outermost = Some(lookup);
                }
                // Complete when the outermost frame's own rules ended the walk, not a
                // frame-pointer guess.
                Ok(None) => {
                    return match outermost {
                        Some(lookup) if self.covers(lookup) => Walk::Complete,
                        _ => Walk::Truncated,
                    };
                }
                Err(err) => {
                    log::trace!("pid {}: unwinding stopped: {err}", copy.pid);
                    return Walk::Truncated;
                }
            }
        }
    }
}

/// How an unwinding walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// At the stack's first frame.
    Complete,
    /// Before it: unreadable stack, no rule, a loop, too deep.
    Truncated,
    /// At this address outside every known mapping (the frames before it are in `out`).
    Unmapped(u64),
}

/// framehop's rule cache, shared by every process (its entries carry the module generation).
pub(crate) fn new_cache() -> CacheX86_64 {
    CacheX86_64::new()
}

#[cfg(test)]
mod tests {
    use critpath_common::{EventKind, PAGE_SIZE, USER_STACK_MAX_PAGES, UserRegs};

    use crate::Symbolizer;

    use super::*;

    /// A sample of this thread taken here, as the eBPF program would take it: registers, and
    /// the stack from the page of the stack pointer up to 9 pages or the end of its mapping.
    #[inline(never)]
    fn sample_here() -> Box<StackSampleEvent> {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers, touches no memory.
        unsafe {
            core::arch::asm!(
                "lea {ip}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                ip = out(reg) ip,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags),
            );
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let stack_end = maps
            .lines()
            .find_map(|l| {
                let (range, _) = l.split_once(' ')?;
                let (a, b) = range.split_once('-')?;
                let (a, b) = (
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                );
                (a..b).contains(&sp).then_some(b)
            })
            .expect("the stack's mapping");
        let base = sp & !(PAGE_SIZE as u64 - 1);
        let pages = (((stack_end - base) as usize) / PAGE_SIZE).min(USER_STACK_MAX_PAGES);
        // SAFETY: an all-integer repr(C) struct; zero is a valid value of every field.
        let mut event: Box<StackSampleEvent> = unsafe { Box::new_zeroed().assume_init() };
        event.header.kind = EventKind::OnCpuStack as u32;
        event.header.pid = std::process::id();
        event.regs = UserRegs { ip, sp, bp };
        event.user_stack_base = base;
        event.user_stack_pages = pages as u32;
        // SAFETY: [base, base + pages pages) lies inside this thread's mapped stack.
        let live = unsafe { std::slice::from_raw_parts(base as *const u8, pages * PAGE_SIZE) };
        event.user_stack[..live.len()].copy_from_slice(live);
        event
    }

    #[inline(never)]
    fn unwind_marker_inner() -> Box<StackSampleEvent> {
        std::hint::black_box(sample_here())
    }

    #[inline(never)]
    fn unwind_marker_outer() -> Box<StackSampleEvent> {
        std::hint::black_box(unwind_marker_inner())
    }

    /// This test's own stack, copied as the kernel would copy it, unwinds through the module's
    /// call-frame information and symbolizes to sample_here < inner < outer < this test, in
    /// order: the base address of the executable (whose code segment's file offset differs
    /// from its address) and framehop's inputs are right.
    #[test]
    fn unwinds_its_own_stack() {
        let event = unwind_marker_outer();
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize_stack_event(&event);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        let at = |suffix: &str| {
            names
                .iter()
                .position(|n| n.ends_with(suffix))
                .unwrap_or_else(|| panic!("no {suffix} in {names:?}"))
        };
        let (test, outer, inner, here) = (
            at("unwinds_its_own_stack"),
            at("unwind_marker_outer"),
            at("unwind_marker_inner"),
            at("sample_here"),
        );
        assert!(test < outer && outer < inner && inner < here, "{names:?}");
        assert_eq!(here, names.len() - 1, "the sampled function is the leaf");
        let counts = &symbolizer.unwind_counts()[&std::process::id()];
        assert_eq!(counts.stacks, 1);
        assert_eq!(counts.stack_bytes, event.user_stack().len() as u64);
    }

    /// A copy cut right above the stack pointer cannot be unwound past the leaf: the stack is
    /// marked truncated instead of being guessed.
    #[test]
    fn a_stack_cut_short_is_truncated() {
        let mut event = unwind_marker_outer();
        // Keep only the page of the stack pointer, and move the pointer to its last word: the
        // return address the leaf needs lies beyond the copy.
        event.user_stack_pages = 1;
        event.regs.sp = event.user_stack_base + PAGE_SIZE as u64 - 8;
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize_stack_event(&event);
        assert_eq!(
            frames[0].function,
            critpath_analyzer::TRUNCATED,
            "{frames:?}"
        );
        assert_eq!(symbolizer.unwind_counts()[&std::process::id()].truncated, 1);
    }
}
