#!/usr/bin/env python3
"""The agent's own cost under process churn (root).

Each phase starts `critpath agent` on a fresh store for `--seconds` (45) and reads its CPU time
(utime + stime, /proc/PID/stat) and peak RSS (VmHWM, /proc/PID/status) just before stopping it.
In a churn phase, `--rate` (20) short-lived `python3` processes per second are started for
`--churn-seconds` (35), from 3 s after the agent; an idle phase starts none. Idle and churn
phases are interleaved `--rounds` times (the order alternating), so drift hits both alike.
Prints each phase and the medians: CPU as a share of one core over the phase, and after the
agent's start-up (from 3 s on: the running cost of an always-on agent), peak RSS in MB.

Also checks that the churn was symbolized right: after each churn phase, the python3 samples
in the store (`critpath query profile --format folded`) should hold the interpreter's own
functions (`Py_RunMain`, `_PyEval_EvalFrameDefault`, ...); the shares of samples that do, and
of samples with an address in no known mapping (`[unknown] 0x…`: unresolved, not misnamed), are
printed.

Example (the README's figure):
  bench/churn.py --critpath /var/tmp/critpath-target/release/critpath --rounds 3
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# A short-lived Python process doing a little of everything: imports, hashing, a few threads'
# worth of interpreter frames (~40 ms of CPU).
CHILD = (
    "import hashlib, json\n"
    "d = {str(i): i * i for i in range(20000)}\n"
    "s = json.dumps(d)\n"
    "for _ in range(20): hashlib.sha256(s.encode()).hexdigest()\n"
)
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def churn(python, rate, seconds, stop_at):
    """Starts `rate` Python processes per second for `seconds` (or until `stop_at`)."""
    started = 0
    children = []
    t0 = time.monotonic()
    end = min(t0 + seconds, stop_at)
    while time.monotonic() < end:
        children.append(subprocess.Popen([python, "-c", CHILD], stdout=subprocess.DEVNULL))
        started += 1
        children = [c for c in children if c.poll() is None]
        next_at = t0 + started / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    for c in children:
        c.wait()
    return started, time.monotonic() - t0


def symbolization(critpath, data_dir, folded=None):
    """Shares of python3 samples whose stacks name the interpreter, and of those with an
    address in no known mapping (the process exited before its mappings were read)."""
    out = subprocess.run(
        [critpath, "query", "profile", "--data-dir", data_dir, "--from", "now-10m",
         "--query", '{comm="python3"}', "--format", "folded"],
        capture_output=True, text=True, check=False)
    if folded:
        with open(folded, "w") as f:
            f.write(out.stdout)
    samples = named = unknown = 0
    for line in out.stdout.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        parts = stack.split(";")
        if any(p.startswith(("Py", "_Py", "pymain", "PyEval")) for p in parts):
            named += n
        # `[unknown] 0x…`: an address in no known mapping (`[unknown] module+0x…` is a
        # function the module has no symbol for, as in a stripped binary: not a failure).
        if any(p.startswith("[unknown] 0x") for p in parts):
            unknown += n
    return samples, named / max(samples, 1), unknown / max(samples, 1), out.stderr.strip()


def phase(args, with_churn):
    data_dir = tempfile.mkdtemp(prefix="critpath-churn-")
    agent = subprocess.Popen(
        [args.critpath, "agent", "--data-dir", data_dir, "--interval", "5s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    started = 0
    try:
        time.sleep(3.0)
        if agent.poll() is not None:
            sys.exit(f"the agent exited: {agent.stderr.read().decode()}")
        # Start-up (loading and verifying the BPF programs, kallsyms) is over by now: an
        # always-on agent pays it once, so the running cost is also given without it.
        startup_cpu = cpu_seconds(agent.pid)
        running_from = time.monotonic()
        if with_churn:
            started, _ = churn(args.python, args.rate, args.churn_seconds,
                               t0 + args.seconds - 1)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - t0)))
        cpu = cpu_seconds(agent.pid)
        rss = peak_rss_mb(agent.pid)
        now = time.monotonic()
        elapsed = now - t0
        running = (cpu - startup_cpu) / (now - running_from)
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agent.kill()
    result = {"churn": with_churn, "processes": started, "cpu_s": cpu, "seconds": elapsed,
              "core_share": cpu / elapsed, "startup_cpu_s": startup_cpu,
              "running_share": running, "peak_rss_mb": rss}
    if with_churn:
        samples, named, unknown, err = symbolization(args.critpath, data_dir, args.folded)
        result.update({"python_samples": samples, "named_share": named, "unknown_share": unknown})
        if samples == 0:
            print(f"  (no python3 samples found: {err})", file=sys.stderr)
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--critpath", default="/var/tmp/critpath-target/release/critpath")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=45.0, help="per phase")
    ap.add_argument("--rate", type=float, default=20.0, help="python3 processes per second")
    ap.add_argument("--churn-seconds", type=float, default=35.0)
    ap.add_argument("--python", default="python3",
                    help="the interpreter to start (default: python3 on PATH; where that is a "
                         "pyenv shim, each start is a chain of ~20 short execs)")
    ap.add_argument("--folded", help="write the last churn phase's python3 stacks (folded) here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the agent loads eBPF programs")
    results = {False: [], True: []}
    for r in range(args.rounds):
        for with_churn in ([False, True] if r % 2 == 0 else [True, False]):
            res = phase(args, with_churn)
            results[with_churn].append(res)
            extra = ""
            if with_churn:
                extra = (f", {res['processes']} processes; python3 samples {res['python_samples']},"
                         f" naming the interpreter {res['named_share']:.1%},"
                         f" with an unmapped address {res['unknown_share']:.1%}")
            print(f"round {r + 1} {'churn' if with_churn else 'idle '}: cpu {res['cpu_s']:.2f} s "
                  f"in {res['seconds']:.1f} s ({res['core_share']:.2%} of a core; start-up "
                  f"{res['startup_cpu_s']:.2f} s, then {res['running_share']:.2%}), "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB{extra}", file=sys.stderr)
    for with_churn in (False, True):
        rs = results[with_churn]
        print(f"{'churn' if with_churn else 'idle'}: median {statistics.median(r['core_share'] for r in rs):.2%}"
              f" of a core ({statistics.median(r['running_share'] for r in rs):.2%} after start-up),"
              f" median peak RSS {statistics.median(r['peak_rss_mb'] for r in rs):.0f} MB"
              f" ({len(rs)} phases)")


if __name__ == "__main__":
    main()
