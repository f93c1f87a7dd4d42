#!/usr/bin/env python3
"""What unwinding with call-frame information costs (README: Unwinding without frame pointers).

1. Per on-CPU sample, frame pointers (--unwind fp) against call-frame information
   (--unwind dwarf): the BPF program's run time (kernel.bpf_stats_enabled, read from the
   program's fdinfo), critpath's own CPU time (user space: draining, unwinding, symbolizing), and
   the bytes of user stack copied. `critpath record -a` samples the whole machine at --hz while
   --procs no-frame-pointer programs (tests/native) burn CPU; the modes alternate --rounds times
   and the medians are reported.
2. Off-CPU waits at the default thresholds (1 ms minimum, 2000 captures per second per CPU),
   both modes alternating: `critpath record -a --off-cpu` while --procs copies of the C program
   in its "wait" mode (a thread that sleeps 2 ms at the end of the 11-frame chain, then writes a
   pipe another thread blocks on) run, and then on a context-switch storm (the `pingpong`
   workload pinned to CPU 0, --storm). Reported: BPF run time of the scheduler programs per
   context switch, the user stacks copied per second and their size, and critpath's CPU time.
3. The agent's memory: `critpath agent` at 19 Hz for --agent-seconds with a dozen profiled
   processes (C and Rust programs without frame pointers, Debian's python3.11, and the C program
   in its wait mode); its resident set is read every second, and the peak and final values
   reported.

Needs root, gcc and rustc. Example:
  bench/unwind.py --critpath /var/tmp/critpath-target/release/critpath
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE = os.path.join(ROOT, "tests", "native")
PERF_EVENT_PROG_TYPE = 7
TRACEPOINT_PROG_TYPE = 5


def build(out):
    gcc = ["gcc", "-O2", "-fomit-frame-pointer", "-g0"]
    subprocess.run(gcc + ["-fPIC", "-shared", "-o", "libdeepchain.so", f"{NATIVE}/libdeepchain.c"], cwd=out, check=True)
    subprocess.run(gcc + ["-o", "deepchain", f"{NATIVE}/deepchain.c", "-L.", "-ldeepchain", "-Wl,-rpath,$ORIGIN"], cwd=out, check=True)
    subprocess.run(["rustc", "--edition", "2024", "-C", "opt-level=3", "-o", "deepchain-rs", f"{NATIVE}/deepchain.rs",
                    "-L", ".", "-C", "link-arg=-Wl,-rpath,$ORIGIN"], cwd=out, check=True)


def workloads(out, n, seconds, waiting=False):
    """n CPU-bound processes without frame pointers, cycling through the three programs (and,
    with `waiting`, the C program in its wait mode, which blocks ~600 times a second)."""
    script = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: sum(range(1000))"
    kinds = [[f"{out}/deepchain", str(seconds)], [f"{out}/deepchain-rs", str(seconds)],
             ["/usr/bin/python3.11", "-c", script]]
    if waiting:
        kinds.append([f"{out}/deepchain", str(seconds), "0", "wait"])
    return [subprocess.Popen(kinds[i % len(kinds)]) for i in range(n)]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bpf_stats(pid, prog_type=PERF_EVENT_PROG_TYPE):
    """(run_time_ns, run_cnt) of the process's programs of one type (summed)."""
    total = [0, 0]
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if info.get("prog_type", "").strip() == str(prog_type):
            total[0] += int(info.get("run_time_ns", "0"))
            total[1] += int(info.get("run_cnt", "0"))
    return total


def record_round(critpath, mode, hz, seconds, out, procs):
    load = workloads(out, procs, seconds + 3)
    rec = subprocess.Popen([critpath, "record", "-a", "-F", str(hz), "--unwind", mode, "--format", "folded",
                            "-o", os.devnull, "-d", str(seconds)], stderr=subprocess.PIPE, text=True)
    time.sleep(seconds - 0.5)
    cpu = cpu_seconds(rec.pid)
    run_ns, runs = bpf_stats(rec.pid)
    _, err = rec.communicate(timeout=120)
    for p in load:
        p.kill()
        p.wait()
    samples = int(err.split(" samples in ")[0].rsplit(" ", 1)[-1])
    copied = None
    for line in err.splitlines():
        if "KiB of stack copied per" in line:
            copied = float(line.split(" KiB of stack copied")[0].rsplit(" ", 1)[-1])
        if "user stacks:" in line:
            print("   ", line.strip())
    return {"cpu_us_per_sample": cpu / max(samples, 1) * 1e6, "bpf_ns_per_run": run_ns / max(runs, 1),
            "samples": samples, "kib_copied": copied}


def offcpu_round(critpath, mode, seconds, load_cmds):
    """One off-CPU recording of the whole machine while `load_cmds` run."""
    load = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in load_cmds]
    rec = subprocess.Popen([critpath, "record", "-a", "--off-cpu", "--unwind", mode, "--format", "folded",
                            "-o", os.devnull, "-d", str(seconds)], stderr=subprocess.PIPE, text=True)
    time.sleep(seconds - 0.5)
    cpu = cpu_seconds(rec.pid)
    # sched_switch, sched_waking and the rare fork/exec programs: their time per context switch.
    run_ns, _ = bpf_stats(rec.pid, TRACEPOINT_PROG_TYPE)
    _, err = rec.communicate(timeout=120)
    for p in load:
        p.kill()
        p.wait()
    res = {"bpf_ns_per_switch": None, "copies_per_s": 0.0, "kib_per_copy": 0.0, "waits": 0,
           "cpu_ms_per_s": cpu / seconds * 1000}
    for line in err.splitlines():
        if "switch-outs" in line:
            switches = int(line.split(" switch-outs")[0].rsplit(" ", 1)[-1])
            res["bpf_ns_per_switch"] = run_ns / max(switches, 1)
            res["waits"] = int(line.split(" waits kept")[0].rsplit(" ", 1)[-1])
        if "off-CPU user stacks:" in line:
            res["copies_per_s"] = float(line.split("/s, ")[0].rsplit("(", 1)[-1])
            res["kib_per_copy"] = float(line.split(" KiB each")[0].rsplit(" ", 1)[-1])
    return res


def offcpu_figures(critpath, out, seconds, rounds, procs, storm):
    if rounds == 0:
        return
    waiting = [[f"{out}/deepchain", str(seconds + 3), "0", "wait"] for _ in range(procs)]
    loads = [("waiting programs", waiting)]
    if storm:
        loads.append(("context-switch storm", [["taskset", "-c", "0", storm, "--rounds", "100000000"]]))
    for name, cmds in loads:
        results = {"fp": [], "dwarf": []}
        for r in range(rounds):
            for mode in (["fp", "dwarf"] if r % 2 == 0 else ["dwarf", "fp"]):
                res = offcpu_round(critpath, mode, seconds, cmds)
                print(f"off-CPU, {name}, round {r + 1} {mode}: {res}", flush=True)
                results[mode].append(res)
        for mode, rows in results.items():
            med = lambda k: statistics.median(row[k] for row in rows)
            print(f"off-CPU, {name}, {mode}: BPF {med('bpf_ns_per_switch'):.0f} ns per context switch, "
                  f"{med('copies_per_s'):.0f} stacks copied/s of {med('kib_per_copy'):.1f} KiB, "
                  f"critpath CPU {med('cpu_ms_per_s'):.1f} ms/s, {med('waits'):.0f} waits kept")


def agent_memory(critpath, out, seconds, procs):
    load = workloads(out, procs, seconds + 10, waiting=True)
    with tempfile.TemporaryDirectory() as store:
        agent = subprocess.Popen([critpath, "agent", "--data-dir", store, "-d", f"{seconds}s"],
                                 stderr=subprocess.DEVNULL)
        rss = []
        while agent.poll() is None:
            try:
                with open(f"/proc/{agent.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
            time.sleep(1)
    for p in load:
        p.kill()
        p.wait()
    return max(rss), rss[-1] if rss else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--critpath", default=os.environ.get("CRITPATH", "/var/tmp/critpath-target/release/critpath"))
    p.add_argument("--hz", type=int, default=199, help="sampling rate of the per-sample rounds (default 199)")
    p.add_argument("--seconds", type=float, default=10, help="length of a round (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per mode (default 3)")
    p.add_argument("--procs", type=int, default=4, help="busy processes during the rounds (default 4)")
    p.add_argument("--offcpu-procs", type=int, default=4, help="waiting programs in the off-CPU rounds (default 4)")
    p.add_argument("--storm", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/critpath-target"),
                                                   "release", "pingpong"),
                   help="context-switch storm program for the off-CPU rounds ('' to skip)")
    p.add_argument("--skip-on-cpu", action="store_true", help="only the off-CPU and memory figures")
    p.add_argument("--skip-agent", action="store_true", help="no memory figure")
    p.add_argument("--agent-seconds", type=int, default=120, help="agent run for the memory figure (default 120)")
    p.add_argument("--agent-procs", type=int, default=12, help="profiled processes for the memory figure (default 12)")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (BPF)")
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_before = f.read().strip()
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    try:
        with tempfile.TemporaryDirectory() as out:
            build(out)
            results = {"fp": [], "dwarf": []}
            for r in range(0 if args.skip_on_cpu else args.rounds):
                for mode in (["fp", "dwarf"] if r % 2 == 0 else ["dwarf", "fp"]):
                    res = record_round(args.critpath, mode, args.hz, args.seconds, out, args.procs)
                    print(f"round {r + 1} {mode}: {res}", flush=True)
                    results[mode].append(res)
            for mode, rows in results.items():
                if not rows:
                    continue
                med = lambda k: statistics.median(row[k] for row in rows)
                kib = [row["kib_copied"] for row in rows if row["kib_copied"] is not None]
                print(f"{mode}: BPF {med('bpf_ns_per_run') / 1000:.1f} µs per sample, critpath CPU "
                      f"{med('cpu_us_per_sample'):.0f} µs per sample"
                      + (f", {statistics.median(kib):.1f} KiB copied per sample" if kib else ""))
            offcpu_figures(args.critpath, out, args.seconds, args.rounds, args.offcpu_procs, args.storm)
            if args.skip_agent:
                return
            peak, last = agent_memory(args.critpath, out, args.agent_seconds, args.agent_procs)
            print(f"agent with {args.agent_procs} profiled processes for {args.agent_seconds} s: "
                  f"peak RSS {peak:.0f} MiB, final {last:.0f} MiB")
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(stats_before)


if __name__ == "__main__":
    main()
