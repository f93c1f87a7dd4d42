//! Builds the eBPF object from `sampler-ebpf/` (nightly, bpfel-unknown-none, bpf-linker) into
//! OUT_DIR, aya-template style; `src/bpf.rs` embeds it with `include_bytes_aligned!`.
use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .context("sampler/ has a parent")?
        .join("sampler-ebpf");
    let root = root.to_str().context("non-UTF-8 path to sampler-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "critpath-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; they need the nightly toolchain with rust-src and \
         bpf-linker (run scripts/setup.sh)",
    )
}
