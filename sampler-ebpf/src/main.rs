//! critpath's eBPF programs.
//!
//! Kept thin on purpose: each program reads what only the kernel can see (stacks, task ids, time),
//! writes one self-contained event into the ring buffer and returns. Aggregation, symbolization
//! and analysis happen in user space (`critpath-sampler`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

/// On the host the crate is an empty binary, so workspace-wide commands (`cargo check --workspace`)
/// work without the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
