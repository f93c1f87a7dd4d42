#!/usr/bin/env python3
"""Short waits at a high switch rate: are sub-millisecond waits kept with their stacks, without
losing events to the ring buffer?

Each round runs `critpath record --off-cpu` around N copies of the `short_waits` workload
(a requester blocked 200-800 us per request on a worker that sleeps that long; both measure
their own off-CPU time exactly), so that the machine switches context ~50,000 times a second.
Per round it prints the switch rate, the events lost to the ring buffer, and for each of the two
stacks the off-CPU time critpath attributed to it over the time the workload measured; at the
end, the median and the spread of those ratios over the rounds (the per-stack estimate's
relative error).

    bench/short_waits.py [--rounds 5] [--instances 10] [--seconds 6] [--critpath PATH]
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(
    __import__("os").environ.get("CARGO_TARGET_DIR", "/var/tmp/critpath-target")
)
STACKS = {
    "request_wait": ("short_waits::request_wait", "blocked_ns"),
    "serve_sleep": ("short_waits::serve_sleep", "slept_ns"),
}


def one_round(critpath, workload, instances, seconds):
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "off.folded"
        script = " ".join(f"{workload} --seconds {seconds} &" for _ in range(instances)) + " wait"
        out = subprocess.run(
            [critpath, "record", "--off-cpu", "--format", "folded", "--value", "off_cpu",
             "-o", str(folded), "--", "sh", "-c", script],
            capture_output=True, text=True, check=True,
        )
        summaries = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
        attributed = {k: 0 for k in STACKS}
        for line in folded.read_text().splitlines():
            stack, _, value = line.rpartition(" ")
            for k, (function, _) in STACKS.items():
                if function in stack:
                    attributed[k] += int(value)
        ratios = {
            k: attributed[k] / sum(s[field] for s in summaries)
            for k, (_, field) in STACKS.items()
        }
        lost = int(re.search(r"\((\d+) events lost", out.stderr).group(1))
        switches = int(re.search(r"(\d+) switch-outs", out.stderr).group(1))
        kept = re.search(r"(\d+) waits kept \((\d+) of them shorter", out.stderr)
        return {
            "ratios": ratios,
            "lost": lost,
            "switches_per_s": switches / seconds,
            "waits_kept": int(kept.group(1)),
            "short_kept": int(kept.group(2)),
        }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--critpath", default=str(TARGET / "release" / "critpath"))
    p.add_argument("--workload", default=str(TARGET / "release" / "short_waits"))
    a = p.parse_args()
    rounds = []
    for i in range(a.rounds):
        r = one_round(a.critpath, a.workload, a.instances, a.seconds)
        rounds.append(r)
        print(
            f"round {i + 1}: {r['switches_per_s']:,.0f} switch-outs/s, {r['lost']} events lost, "
            f"{r['waits_kept']} waits kept ({r['short_kept']} short); attributed/measured: "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["ratios"].items()),
            flush=True,
        )
    for k in STACKS:
        v = [r["ratios"][k] for r in rounds]
        err = [abs(x - 1) for x in v]
        print(
            f"{k}: median ratio {statistics.median(v):.3f} (min {min(v):.3f}, max {max(v):.3f}); "
            f"median |relative error| {statistics.median(err):.3f}, max {max(err):.3f}"
        )
    print(f"events lost: {sum(r['lost'] for r in rounds)} in {len(rounds)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
