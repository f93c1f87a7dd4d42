//! Operating-system calls the sampler needs: tracefs, tracepoint formats, clocks, processes.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

/// Where tracefs is normally mounted.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Returns tracefs' mount point, mounting it when nothing is mounted there (it is not mounted at
/// boot on some kernels, and aya's tracepoint attach needs it).
pub fn ensure_tracefs() -> Result<PathBuf, Error> {
    for dir in [TRACEFS, "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = CString::new(TRACEFS).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Tracefs(io::Error::last_os_error()));
    }
    Ok(PathBuf::from(TRACEFS))
}

/// Offset of `field` in the record of tracepoint `category:event`, read from its format file.
pub fn tracepoint_field_offset(
    tracefs: &Path,
    category: &str,
    event: &str,
    field: &str,
) -> Result<u32, Error> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::TracepointFormat {
        tracepoint: format!("{category}:{event}"),
        reason: format!("cannot read {}: {source}", path.display()),
    })?;
    parse_field_offset(&text, field).ok_or_else(|| Error::TracepointFormat {
        tracepoint: format!("{category}:{event}"),
        reason: format!("no field {field:?} in {}", path.display()),
    })
}

/// Finds `offset:N;` on the `field:` line whose declared name is `field`.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = rest.trim().strip_prefix("offset:")?.split(';').next()?;
        offset.parse().ok()
    })
}

/// Nanoseconds to add to a CLOCK_MONOTONIC time (what `bpf_ktime_get_ns` returns) to get Unix time.
pub fn monotonic_to_unix_offset_ns() -> i64 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    let before = read(libc::CLOCK_MONOTONIC);
    let real = read(libc::CLOCK_REALTIME);
    let after = read(libc::CLOCK_MONOTONIC);
    real - (before + (after - before) / 2)
}

/// Whether a process (or thread) id exists.
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Field `n` of a `/proc/.../stat` file (numbered as in proc(5): 1 is the id, 2 the name), or
/// `None` when the file is gone or the field is missing or malformed.
fn stat_field<T: std::str::FromStr>(path: &str, n: usize) -> Option<T> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The name (field 2) may hold spaces and parentheses: fields after it follow its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in `/proc/PID/stat`); false when the
/// process is gone.
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    stat_field::<u64>(&format!("/proc/{pid}/stat"), 9).is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Whether thread `tid` of process `pid` runs as background work: scheduled `SCHED_IDLE`, or
/// at nice 10 or more (`/proc/PID/task/TID/stat`: nice is field 19, policy field 41); false
/// when it is gone.
pub fn is_background_thread(pid: u32, tid: u32) -> bool {
    const SCHED_IDLE: i64 = 5;
    let path = format!("/proc/{pid}/task/{tid}/stat");
    stat_field::<i64>(&path, 41) == Some(SCHED_IDLE)
        || stat_field::<i64>(&path, 19).is_some_and(|nice| nice >= 10)
}

/// [`is_background_thread`] for the threads of a stream of samples, each looked up again at
/// most every ten seconds (a thread may change its priority, a thread id may be reused).
#[derive(Debug, Default)]
pub struct BackgroundThreads {
    known: std::collections::HashMap<u32, (bool, std::time::Instant)>,
}

impl BackgroundThreads {
    const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);
    const MAX_THREADS: usize = 65_536;

    /// Whether thread `tid` of `pid` is background work now.
    pub fn get(&mut self, pid: u32, tid: u32) -> bool {
        let now = std::time::Instant::now();
        if let Some(&(background, at)) = self.known.get(&tid)
            && now.duration_since(at) < Self::RECHECK
        {
            return background;
        }
        if self.known.len() >= Self::MAX_THREADS {
            self.known.clear();
        }
        let background = is_background_thread(pid, tid);
        self.known.insert(tid, (background, now));
        background
    }
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF maps against it (before 5.11).
pub fn raise_memlock_rlimit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit; failure is harmless on kernels with memcg accounting.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if rc != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            io::Error::last_os_error()
        );
    }
}

/// One line of `/proc/<pid>/maps` that maps a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset mapped at `start`.
    pub offset: u64,
    /// Inode of the file.
    pub inode: u64,
    /// Path of the file, or a pseudo name such as `[vdso]`.
    pub path: String,
}

/// Reads the executable file mappings of a process.
pub fn read_exec_maps(pid: u32) -> io::Result<Vec<MapsEntry>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text.lines().filter_map(parse_maps_line).collect())
}

/// Parses `start-end perms offset dev inode path`, keeping executable mappings with a name.
fn parse_maps_line(line: &str) -> Option<MapsEntry> {
    let mut parts = line.split_ascii_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let perms = parts.next()?;
    let offset = parts.next()?;
    let _dev = parts.next()?;
    let inode = parts.next()?;
    let path = parts.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || path.is_empty() {
        return None;
    }
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        path,
    })
}

/// The GNU build-id of an ELF file as lowercase hex; empty when it has none or cannot be read.
pub fn build_id(path: &str) -> String {
    blazesym::helper::read_elf_build_id(path)
        .ok()
        .flatten()
        .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

/// Inode of a path, if it can be stat'ed.
pub fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Modification time of a path in nanoseconds, if it can be stat'ed.
pub fn mtime_of(path: &Path) -> Option<i64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.mtime() * 1_000_000_000 + m.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that lowers its own priority to nice 19 is background work; the test's own
    /// thread is as its nice says, and a thread that does not exist is not.
    #[test]
    fn background_threads_are_told_by_their_priority() {
        let pid = std::process::id();
        // SAFETY: gettid takes no arguments.
        let me = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        // SAFETY: getpriority of the calling thread.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(is_background_thread(pid, me), nice >= 10, "nice {nice}");
        assert!(!is_background_thread(pid, u32::MAX));
        let (tid, background) = std::thread::spawn(move || {
            // SAFETY: gettid takes no arguments.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            // SAFETY: setpriority on the calling thread (a tid is a PRIO_PROCESS id on Linux)
            // only lowers its priority.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) };
            assert_eq!(rc, 0, "setpriority: {}", io::Error::last_os_error());
            (tid, BackgroundThreads::default().get(pid, tid))
        })
        .join()
        .unwrap();
        assert!(background, "thread {tid} at nice 19");
    }

    const FORK_FORMAT: &str = "name: sched_process_fork
ID: 316
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:16;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:32;\tsize:4;\tsigned:1;
";

    /// Field offsets are found by name, whatever the declaration's shape (arrays, __data_loc).
    #[test]
    fn parses_tracepoint_format() {
        assert_eq!(parse_field_offset(FORK_FORMAT, "parent_pid"), Some(12));
        assert_eq!(parse_field_offset(FORK_FORMAT, "child_pid"), Some(32));
        assert_eq!(parse_field_offset(FORK_FORMAT, "child_comm"), Some(16));
        assert_eq!(parse_field_offset(FORK_FORMAT, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK_FORMAT, "nope"), None);
    }

    /// Executable file mappings are kept with their offsets; data and anonymous ones are not.
    #[test]
    fn parses_maps_lines() {
        let e = parse_maps_line(
            "7f1c2a400000-7f1c2a595000 r-xp 00028000 fd:01 1835 /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(e.start, 0x7f1c2a400000);
        assert_eq!(e.offset, 0x28000);
        assert_eq!(e.inode, 1835);
        assert_eq!(e.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert!(parse_maps_line("7f1c-7f1d rw-p 00000000 00:00 0 ").is_none());
        assert!(parse_maps_line("7f1c-7f1d r--p 00000000 fd:01 1835 /lib/x.so").is_none());
        let vdso = parse_maps_line("7ffd-7ffe r-xp 00000000 00:00 0 [vdso]").unwrap();
        assert_eq!(vdso.path, "[vdso]");
    }

    /// This process's own executable mapping is found.
    #[test]
    fn reads_own_maps() {
        let maps = read_exec_maps(std::process::id()).unwrap();
        assert!(maps.iter().any(|m| m.inode != 0 && m.path.starts_with('/')));
    }
}
