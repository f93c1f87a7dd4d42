#!/usr/bin/env bash
# Installs everything critpath needs on a fresh Debian 12 machine (root). Idempotent: each step
# checks whether its result is already there. See ../shared/TOOLCHAIN.md for where these facts come from.
set -euo pipefail

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: LLVM 22 (and its link dependencies) for bpf-linker, since nightly rustc uses
# LLVM 22; golang-go for `go tool pprof`, which the tests use to prove pprof output opens in the
# reference reader (no protoc: the pprof messages are declared with prost derives). For the
# unwinding tests (tests/native): gcc builds the C programs without frame pointers, Debian's
# python3.11 is the packaged program profiled, and libc6-dbg names the C library's internal
# start-up functions (__libc_start_call_main) under main. The field benchmark (tests/field:
# `critpath eval --field`) builds its C programs with gcc against libsqlite3 and runs Debian's
# redis-server and nginx, and PostgreSQL with pgbench for its held-out outside check
# (tests/field/apt-packages.txt).
APT_PKGS=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libelf-dev pkg-config golang-go
  gcc python3.11-minimal libc6-dbg redis-server nginx-light libsqlite3-dev postgresql-15
  postgresql-client-15)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The eBPF crate is built with nightly's build-std (core for bpfel-unknown-none).
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "rustup component add rust-src --toolchain nightly"
  rustup component add rust-src --toolchain nightly
fi

# bpf-linker links the eBPF object; built against Debian's LLVM 22.
if ! command -v bpf-linker >/dev/null 2>&1; then
  log "cargo install bpf-linker (LLVM 22)"
  LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH \
    cargo install --locked bpf-linker --no-default-features --features llvm-22
fi

# tracefs: aya's TracePoint::attach needs it; the sampler also mounts it itself when absent.
if [ ! -d /sys/kernel/tracing/events ]; then
  $SUDO mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
# Pyroscope compatibility check (tests/compat/pyroscope): Debian's Chromium, driven by
# playwright-core, renders critpath's flamebearer output in Pyroscope's flame graph component.
# Needs Node 20+ and npm; npm ci reruns only when node_modules is missing or
# package-lock.json changed since the last install.
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  log "apt-get install chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
PYRO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/compat/pyroscope" && pwd)"
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
  log "skipping tests/compat/pyroscope: needs Node 20 or later (found: $(node --version 2>/dev/null || echo none))"
elif [ ! -d "$PYRO_DIR/node_modules" ] ||
     ! (cd "$PYRO_DIR" && sha256sum --status -c node_modules/.critpath-lock.sha256 2>/dev/null); then
  log "npm ci (tests/compat/pyroscope)"
  (cd "$PYRO_DIR" && npm ci --no-audit --no-fund --loglevel=error &&
     sha256sum package-lock.json > node_modules/.critpath-lock.sha256)
fi
# The web page (api/ui): TypeScript bundled by esbuild with uPlot, built into the binary by
# api/build.rs; its browser test drives Chromium with playwright-core. npm ci reruns only when
# node_modules is missing or package-lock.json changed since the last install.
UI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../api/ui" && pwd)"
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
  echo "critpath needs Node.js 20 or later to build its web page (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
elif [ ! -d "$UI_DIR/node_modules" ] ||
     ! (cd "$UI_DIR" && sha256sum --status -c node_modules/.critpath-lock.sha256 2>/dev/null); then
  log "npm ci (api/ui)"
  (cd "$UI_DIR" && npm ci --no-audit --no-fund --loglevel=error &&
     sha256sum package-lock.json > node_modules/.critpath-lock.sha256)
fi
# Notebooks (notebooks/): a virtual environment outside the clone with the pinned packages,
# which the tests execute the notebooks with; reinstalled only when the pins change.
NB_VENV="${CRITPATH_NOTEBOOKS_VENV:-/var/tmp/critpath-notebooks-venv}"
NB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../notebooks" && pwd)"
if [ ! -x "$NB_VENV/bin/jupyter" ] ||
   ! (cd "$NB_DIR" && sha256sum --status -c "$NB_VENV/.critpath-pins.sha256" 2>/dev/null); then
  log "pip install -r notebooks/requirements.txt (into $NB_VENV)"
  python3 -m venv "$NB_VENV"
  "$NB_VENV/bin/pip" install --quiet --disable-pip-version-check \
    -r "$NB_DIR/requirements.txt" -c "$NB_DIR/constraints.txt"
  (cd "$NB_DIR" && sha256sum requirements.txt constraints.txt > "$NB_VENV/.critpath-pins.sha256")
fi
log "toolchain ready"
