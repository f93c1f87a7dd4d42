//! A loop of unbuffered 64-byte `write` syscalls to /dev/null in `write_devnull_loop`: most
//! samples are in the kernel below it.
//!
//! Usage: `syscall_heavy [SECONDS]`. Summary: writes done.

use critpath_tests::workload::{Args, Deadline, print_summary};
use std::fs::File;
use std::io::Write;

#[inline(never)]
fn main() {
    let args = Args::parse(&[], &[]);
    let deadline = Deadline::after(args.duration);
    let devnull = File::options().write(true).open("/dev/null");
    let mut devnull = devnull.unwrap_or_else(|error| {
        eprintln!("syscall_heavy: opening /dev/null: {error}");
        std::process::exit(1)
    });
    let writes = write_devnull_loop(&mut devnull, deadline);
    print_summary("syscall_heavy", &[("writes", writes)]);
}

#[inline(never)]
fn write_devnull_loop(devnull: &mut File, deadline: Deadline) -> u64 {
    let buffer = [0x5a_u8; 64];
    let mut writes = 0;
    while !deadline.passed() {
        // One `write` syscall per call: `File` has no buffer.
        match devnull.write(&buffer) {
            Ok(64) => writes += 1,
            other => panic!("write to /dev/null: {other:?}"),
        }
    }
    writes
}
