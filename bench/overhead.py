#!/usr/bin/env python3
"""Measures the slowdown a running critpath sampler causes on a benchmark command.

Runs the benchmark alternately without and with `critpath record` running in the background
(order ABBA ABBA ... so drift hits both sides alike), and reports the median wall time of each
side, the median of the per-pair ratios, and its spread. This machine is noisy: trust medians
and ratios of interleaved runs, never a single run.

Example (what the README's figure comes from):
  bench/overhead.py --pairs 15 --record-args "-a -F 19" -- target/release/cpu_bench
"""

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time


def run_bench(cmd):
    start = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    wall = time.perf_counter() - start
    # Benchmarks that print a JSON summary with elapsed_ns are timed by themselves (no process
    # start-up in the figure); others by their wall time.
    try:
        summary = json.loads(out.stdout.decode().strip().splitlines()[-1])
        return summary["elapsed_ns"] / 1e9
    except (ValueError, KeyError, IndexError):
        return wall


def with_sampler(critpath, record_args, cmd, settle):
    rec = subprocess.Popen(
        [critpath, "record", *record_args, "--format", "folded", "-o", os.devnull],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(settle)  # let it load and attach
    if rec.poll() is not None:
        sys.exit(f"critpath record exited early: {rec.stderr.read().decode()}")
    try:
        return run_bench(cmd)
    finally:
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=60)
        if rec.returncode != 0:
            sys.exit(f"critpath record failed: {err.decode()}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=15, help="baseline/sampled pairs (default 15)")
    p.add_argument("--critpath", default=os.environ.get("CRITPATH", "/var/tmp/critpath-target/release/critpath"))
    p.add_argument("--record-args", default="-a -F 19", help='arguments for critpath record (default "-a -F 19")')
    p.add_argument("--settle", type=float, default=1.0, help="seconds to wait after starting the sampler")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- benchmark command")
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("give the benchmark command after --")
    record_args = shlex.split(a.record_args)

    base, sampled, ratios = [], [], []
    for i in range(a.pairs):
        if i % 2 == 0:
            b = run_bench(cmd)
            s = with_sampler(a.critpath, record_args, cmd, a.settle)
        else:
            s = with_sampler(a.critpath, record_args, cmd, a.settle)
            b = run_bench(cmd)
        base.append(b)
        sampled.append(s)
        ratios.append(s / b)
        print(f"pair {i + 1:2}/{a.pairs}: baseline {b:.4f} s, with sampler {s:.4f} s, ratio {s / b:.4f}", file=sys.stderr)

    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    result = {
        "command": cmd,
        "record_args": record_args,
        "pairs": a.pairs,
        "baseline_median_s": statistics.median(base),
        "sampled_median_s": statistics.median(sampled),
        "median_ratio": statistics.median(ratios),
        "ratio_iqr": [q[0], q[-1]],
        "slowdown_percent": (statistics.median(ratios) - 1) * 100,
    }
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"baseline median {result['baseline_median_s']:.4f} s, with sampler {result['sampled_median_s']:.4f} s; "
            f"median ratio {result['median_ratio']:.4f} (IQR {q[0]:.4f}–{q[-1]:.4f}): "
            f"slowdown {result['slowdown_percent']:+.2f}%"
        )


if __name__ == "__main__":
    main()
