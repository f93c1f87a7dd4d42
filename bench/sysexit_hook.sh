#!/bin/bash
# What a program on every system call's exit costs (docs/design/unwinding.md, off-CPU stacks):
# syscall_heavy (64-byte writes to /dev/null) pinned to CPU 0 for 3 s, alternately without and
# with a bpftrace program on raw_syscalls:sys_exit that looks the thread up in a map (what a
# "copy this thread's stack now?" check would cost). Prints writes per run, then the median
# ratio. Needs root, bpftrace (apt-get install bpftrace) and a release build of the workloads.
set -euo pipefail
W=${W:-/var/tmp/critpath-target/release/syscall_heavy}
PAIRS=${PAIRS:-6}
run() { taskset -c 0 "$W" 3 | python3 -c 'import sys, json; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["writes"])'; }
out=$(mktemp)
for _ in $(seq "$PAIRS"); do
  base=$(run)
  bpftrace -e 'BEGIN { @pending[0] = 0; } tracepoint:raw_syscalls:sys_exit { if (@pending[tid] != 0) { delete(@pending[tid]); } }' >/dev/null 2>&1 &
  probe=$!
  sleep 3
  hooked=$(run)
  kill -INT "$probe"
  wait "$probe" || true
  echo "$base $hooked" | tee -a "$out"
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
print(f"median throughput hooked/base {statistics.median(h / b for b, h in rows):.3f}; "
      f"ns per write {statistics.median(3e9 / b for b, _ in rows):.0f} -> {statistics.median(3e9 / h for _, h in rows):.0f}")
PY
