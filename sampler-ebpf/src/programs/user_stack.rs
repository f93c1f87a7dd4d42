//! Copying the current task's user registers and the top of its user stack, for unwinding with
//! call-frame information in user space (on-CPU samples and off-CPU waits alike).

use aya_ebpf::helpers::generated::{
    bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
};
use critpath_common::{PAGE_SIZE, USER_STACK_MAX_PAGES, UserRegs};

/// `struct pt_regs` on x86-64, as the kernel saves it at entry (only the fields read here named).
#[repr(C)]
struct PtRegs {
    r15_to_r12: [u64; 4],
    bp: u64,
    bx_to_orig_ax: [u64; 11],
    ip: u64,
    cs: u64,
    flags: u64,
    sp: u64,
    ss: u64,
}

/// What [`copy`] found.
pub(crate) enum Copied {
    /// The task has no user context (a kernel thread, or the idle task): nothing to copy.
    NoUser,
    /// Its saved registers could not be read.
    Failed,
    /// The registers, the user address of the first copied byte (the stack pointer's page) and
    /// the pages copied (0 when even the stack pointer's page could not be read).
    Stack {
        regs: UserRegs,
        base: u64,
        pages: u32,
    },
}

/// Copies the current task's user registers — those the kernel saved when the task entered it,
/// found whatever the task is doing now — and up to `pages` pages of its user stack, from the
/// page of the stack pointer up, into `dst`, one page at a time; it stops at the end of the
/// stack's mapping (or at a page not in memory).
///
/// # Safety
/// `dst` must be valid for writes of [`USER_STACK_MAX_PAGES`] pages.
#[inline(always)]
pub(crate) unsafe fn copy(dst: *mut u8, pages: u32) -> Copied {
    // SAFETY: the task pointer is the current task's (BTF-typed); its saved registers are read
    // with bpf_probe_read_kernel, which fails cleanly on a bad pointer; each user read writes
    // one page at an offset below USER_STACK_MAX_PAGES pages of `dst`, per the contract.
    unsafe {
        let task = bpf_get_current_task_btf();
        let saved = bpf_task_pt_regs(task) as *const PtRegs;
        let mut regs = core::mem::MaybeUninit::<PtRegs>::uninit();
        let read = bpf_probe_read_kernel(
            regs.as_mut_ptr().cast(),
            size_of::<PtRegs>() as u32,
            saved.cast(),
        );
        if read != 0 {
            return Copied::Failed;
        }
        let regs = regs.assume_init();
        // A kernel thread has no user context: its saved segment is not a user one.
        if regs.cs & 3 != 3 {
            return Copied::NoUser;
        }
        let base = regs.sp & !(PAGE_SIZE as u64 - 1);
        let mut copied = 0u32;
        for i in 0..USER_STACK_MAX_PAGES {
            if i as u32 >= pages {
                break;
            }
            let offset = i * PAGE_SIZE;
            let rc = bpf_probe_read_user(
                dst.add(offset).cast(),
                PAGE_SIZE as u32,
                (base + offset as u64) as *const _,
            );
            if rc != 0 {
                break;
            }
            copied += 1;
        }
        Copied::Stack {
            regs: UserRegs {
                ip: regs.ip,
                sp: regs.sp,
                bp: regs.bp,
            },
            base,
            pages: copied,
        }
    }
}
