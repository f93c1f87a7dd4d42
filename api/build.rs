//! Builds the web page (api/ui: TypeScript bundled by esbuild, see api/ui/build.mjs) into
//! OUT_DIR/ui, which the binary embeds: the page is served without anything fetched at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

fn main() -> anyhow::Result<()> {
    let ui = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("ui");
    for input in [
        "src",
        "index.html",
        "build.mjs",
        "package-lock.json",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed=ui/{input}");
    }
    if !ui.join("node_modules").is_dir() {
        bail!(
            "{} is missing: run scripts/setup.sh (it runs `npm ci` there; the web page is built \
             with Node.js 20 or later)",
            ui.join("node_modules").display()
        );
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("ui");
    let status = Command::new("node")
        .arg(ui.join("build.mjs"))
        .arg(&out)
        .status()
        .context("running node to build the web page (Node.js 20 or later is needed)")?;
    ensure!(
        status.success(),
        "building the web page (api/ui) failed: {status}"
    );
    Ok(())
}
