#!/usr/bin/env python3
"""Measures the truth of the field scenarios by experiment (Python 3.11 standard library only).

For each scenario of manifest.json and each candidate function f, runs the scenario's programs
interleaved as A U D A U D ... (A: baseline, U: FIELD_SCALE_f=1+delta, D: FIELD_SCALE_f=1-delta),
`rounds` times, each run `seconds` long, and computes for each metric m (mean_us, p50_us, p99_us,
throughput) the elasticity

    e = (ln m(U) - ln m(D)) / (ln(1+delta) - ln(1-delta))

averaged over rounds, with a 95% interval from the noise floor sigma (standard deviation of ln m
over all the scenario's baseline runs): +- t * sigma * sqrt(2/rounds) / (ln(1+delta) - ln(1-delta)).
The measured culprit is the candidate with the largest mean-latency elasticity; `separated` says
whether its interval lies wholly above every other candidate's.

Scenarios with a "deploy" block (before/after environments) also get the version experiment:
before and after runs interleaved, with the change of each metric and its interval. Scenarios of
kind "debian" (real programs) get their configuration experiment ("config": before/after values
of template variables) the same way; their candidates are not perturbed (no knobs in them).

Writes tests/field/truth/<scenario>.json (or --out DIR). Progress goes to stderr.

    python3 tests/field/truth.py [--bin DIR] [--rounds N] [--seconds S] [--delta D]
                                 [--out DIR] [--list] [--no-debian] [SCENARIO...]
"""
import argparse
import datetime
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
METRICS = ("mean_us", "p50_us", "p99_us", "throughput")

# two-sided 95% quantiles of Student's t by degrees of freedom
T975 = [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365),
        (8, 2.306), (9, 2.262), (10, 2.228), (12, 2.179), (15, 2.131), (20, 2.086),
        (25, 2.060), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)]


def t975(df):
    if df < 1:
        return float("nan")
    q = 1.96
    for d, v in reversed(T975):
        if df >= d:
            return v
    return q


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_jiffies():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def background_busy(interval=0.25):
    """Fraction of all CPUs busy over `interval` seconds (nothing of ours runs then)."""
    b0, t0 = cpu_jiffies()
    time.sleep(interval)
    b1, t1 = cpu_jiffies()
    return (b1 - b0) / max(1, t1 - t0)


class Quiet:
    """Before each run, waits (up to `wait` seconds) until the machine's other CPU use is
    below `threshold` (a fraction of all CPUs), so that builds running beside do not make
    the noise. Records what it saw."""

    def __init__(self, threshold, wait, budget, retry_others=0.5):
        self.threshold, self.wait, self.budget = threshold, wait, budget
        self.retry_others = retry_others
        self.waited = 0.0

    def before_run(self):
        if self.wait <= 0:
            return {"background_before": None}
        start = time.monotonic()
        busy = background_busy()
        limit = min(self.wait, max(0.0, self.budget - self.waited))
        while busy > self.threshold and time.monotonic() - start < limit:
            busy = background_busy(1.0)
        self.waited += time.monotonic() - start
        return {"background_before": round(busy, 3), "quiet": busy <= self.threshold}


def machine_info():
    info = {"uname": " ".join(platform.uname()), "cpus": os.cpu_count(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, timeout=10)
        info["gcc"] = out.stdout.splitlines()[0] if out.stdout else None
    except (OSError, subprocess.SubprocessError):
        info["gcc"] = None
    return info


def subst(text, variables):
    for k, v in variables.items():
        text = text.replace("{" + k + "}", str(v))
    return text


NICE = [0]  # niceness increment for the scenario's programs (--nice)


def set_nice():
    os.nice(NICE[0])


class RunError(Exception):
    pass


class Scenario:
    def __init__(self, spec, bin_dir):
        self.spec = spec
        self.name = spec["name"]
        self.bin_dir = bin_dir
        self.dir = f"/tmp/critpath-field-{self.name}"

    @property
    def kind(self):
        return self.spec.get("kind", "synthetic")

    def resolve(self, argv0):
        if os.path.isabs(argv0):
            return argv0
        return os.path.join(self.bin_dir, argv0)

    def missing(self):
        """Programs that are not there (a Debian package not installed)."""
        out = []
        for p in self.spec["programs"]:
            path = self.resolve(p["argv"][0])
            if not os.access(path, os.X_OK):
                out.append(path)
        return out

    def run(self, seconds, env_extra=None, variables=None):
        """Runs the scenario once; returns the measured program's JSON summary, with the CPU
        that its programs used and the CPU used by everything else on the machine meanwhile
        (both in cores) added as "cpu_ours" and "cpu_others"."""
        w0, (b0, j0), c0 = time.monotonic(), cpu_jiffies(), children_cpu()
        result = self._run(seconds, env_extra, variables)
        w1, (b1, j1), c1 = time.monotonic(), cpu_jiffies(), children_cpu()
        wall = max(1e-3, w1 - w0)
        ours = (c1 - c0) / wall
        result["cpu_ours"] = round(ours, 3)
        result["cpu_others"] = round(max(0.0, (b1 - b0) / HZ / wall - ours), 3)
        return result

    def _run(self, seconds, env_extra=None, variables=None):
        vars_ = {"seconds": seconds, "server_seconds": seconds + 15, "dir": self.dir}
        vars_.update(self.spec.get("vars", {}))
        vars_.update(variables or {})
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("FIELD_SCALE_") or k == "FIELD_VERSION":
                del env[k]
        env.update(self.spec.get("env", {}))
        env.update(env_extra or {})
        shutil.rmtree(self.dir, ignore_errors=True)
        setup = self.spec.get("setup", {})
        if setup:
            os.makedirs(self.dir, exist_ok=True)
            for f in setup.get("files", []):
                with open(os.path.join(HERE, f["template"])) as src:
                    text = subst(src.read(), vars_)
                path = subst(f["path"], vars_)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as dst:
                    dst.write(text)
            for d in setup.get("mkdir", []):
                os.makedirs(subst(d, vars_), exist_ok=True)
            for command in setup.get("run", []):
                argv = [subst(a, vars_) for a in command]
                argv[0] = self.resolve(argv[0])
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
                if done.returncode != 0:
                    raise RunError(f"{self.name}: setup {' '.join(argv)} failed "
                                   f"({done.returncode}): {done.stderr.decode(errors='replace')[-600:]}")
        procs = []
        measured = None
        errs = []
        try:
            for p in self.spec["programs"]:
                argv = [subst(a, vars_) for a in p["argv"]]
                argv[0] = self.resolve(argv[0])
                is_measured = p["role"] == self.spec["measured_by"]
                err = tempfile.TemporaryFile()
                errs.append((p["role"], err))
                proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                        preexec_fn=set_nice if NICE[0] else None,
                                        stdout=subprocess.PIPE if is_measured else subprocess.DEVNULL,
                                        stderr=err, start_new_session=True)
                procs.append(proc)
                if is_measured:
                    measured = proc
                else:
                    time.sleep(p.get("start_delay", 0.1))
            try:
                out, _ = measured.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                raise RunError(f"{self.name}: measured program did not finish")
            for proc in procs:
                if proc is not measured and proc.poll() is not None:
                    raise RunError(f"{self.name}: {proc.args[0]} exited early ({proc.returncode})")
            if measured.returncode != 0:
                raise RunError(f"{self.name}: measured program exited {measured.returncode}")
            lines = [l for l in out.decode().splitlines() if l.startswith("{")]
            if not lines:
                raise RunError(f"{self.name}: no JSON line")
            result = json.loads(lines[-1])
            if result.get("requests", 0) <= 0:
                raise RunError(f"{self.name}: no requests measured")
            return result
        except RunError as e:
            tails = []
            for role, err in errs:
                err.seek(0)
                t = err.read().decode(errors="replace")[-600:]
                if t.strip():
                    tails.append(f"[{role}] {t.strip()}")
            raise RunError(str(e) + ("\n" + "\n".join(tails) if tails else ""))
        finally:
            self.stop(procs)
            for _, err in errs:
                err.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def stop(procs):
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for proc in reversed(procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group: helpers a server forked
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass


def guarded_run(sc, seconds, env_extra=None, variables=None):
    """One run after waiting for quiet; when the rest of the machine used more than
    --retry-others cores during it and the quiet budget is not spent, the run is done once
    more (after waiting for quiet again) and the first result is kept under "discarded"."""
    q = QUIET.before_run()
    r = sc.run(seconds, env_extra=env_extra, variables=variables)
    if (QUIET.wait > 0 and r["cpu_others"] > QUIET.retry_others
            and QUIET.waited < QUIET.budget):
        log(f"[{sc.name}] busy machine during the run ({r['cpu_others']:.2f} cores besides ours): "
            "running it again")
        first = r
        q = QUIET.before_run()
        r = sc.run(seconds, env_extra=env_extra, variables=variables)
        q["discarded"] = first
    return q, r


def ln_metrics(r):
    return {m: math.log(max(r[m], 1e-9)) for m in METRICS}


def summary_of(runs):
    return {m: {"mean": statistics.fmean(r[m] for r in runs),
                "min": min(r[m] for r in runs), "max": max(r[m] for r in runs)}
            for m in METRICS}


def noise_floor(runs):
    """Standard deviation of ln m over baseline runs, per metric."""
    out = {}
    for m in METRICS:
        xs = [math.log(max(r[m], 1e-9)) for r in runs]
        out[m] = statistics.stdev(xs) if len(xs) >= 2 else float("nan")
    return out


def compare(before, after, sigma):
    """Change of each metric from before to after runs (paired by round)."""
    out = {}
    n = min(len(before), len(after))
    for m in METRICS:
        d = [math.log(after[i][m]) - math.log(before[i][m]) for i in range(n)]
        mean = statistics.fmean(d)
        half_noise = t975(max(1, 2 * n - 2)) * sigma[m] * math.sqrt(2 / n) if n else float("nan")
        half_pairs = t975(n - 1) * statistics.stdev(d) / math.sqrt(n) if n >= 2 else float("nan")
        half = max(h for h in (half_noise, half_pairs) if not math.isnan(h)) if n >= 2 else half_noise
        out[m] = {"before": statistics.fmean(r[m] for r in before[:n]),
                  "after": statistics.fmean(r[m] for r in after[:n]),
                  "log_ratio": mean, "interval": [mean - half, mean + half],
                  "ratio": math.exp(mean),
                  "ratio_interval": [math.exp(mean - half), math.exp(mean + half)],
                  "log_ratio_per_round": d}
    return out


def measure_perturbation(sc, args, env_base, result):
    cands = sc.spec["candidates"]
    up, down = 1 + args.delta, 1 - args.delta
    L = math.log(up) - math.log(down)
    baselines, pert = [], {c: [] for c in cands}
    runs = []
    nrun = args.rounds * (3 * len(cands) + 1)
    i = 0

    def one(label, env):
        nonlocal i
        i += 1
        t = time.monotonic()
        q, r = guarded_run(sc, args.seconds, env_extra={**env_base, **env})
        runs.append({"label": label, "env": env, **q, "result": r})
        log(f"[{sc.name}] {i}/{nrun} {label:<28} mean={r['mean_us']:9.1f}us "
            f"p50={r['p50_us']:9.1f} p99={r['p99_us']:9.1f} tput={r['throughput']:8.1f} "
            f"cpu={r['cpu_ours']:.2f}+{r['cpu_others']:.2f} ({time.monotonic() - t:.1f}s)")
        return r

    for rnd in range(args.rounds):
        for c in cands:
            baselines.append(one("A", {}))
            var = f"FIELD_SCALE_{c}"
            order = [(up, "U"), (down, "D")] if rnd % 2 == 0 else [(down, "D"), (up, "U")]
            got = {}
            for s, tag in order:
                got[tag] = one(f"{tag} {c}={s:g}", {var: f"{s:g}"})
            pert[c].append((got["U"], got["D"]))
        baselines.append(one("A", {}))
    result["perturbation"] = analyze_perturbation(sc.spec, runs, args.delta, args.rounds,
                                                  args.seconds, env_base)
    return result["perturbation"]["noise_floor"]


def robust_sigma(xs):
    """1.4826 * median absolute deviation: the standard deviation of normal noise, but
    hardly moved by a run or two that a build running beside spoiled."""
    if len(xs) < 2:
        return float("nan")
    med = statistics.median(xs)
    return 1.4826 * statistics.median(abs(x - med) for x in xs)


def analyze_perturbation(spec, runs, delta, rounds, seconds, env_base):
    """Elasticities from the runs (labels "A", "U f=..", "D f=.."; U and D of a candidate
    paired in order)."""
    cands = spec["candidates"]
    L = math.log(1 + delta) - math.log(1 - delta)
    baselines = [r["result"] for r in runs if r["label"] == "A"]
    ups, downs = {c: [] for c in cands}, {c: [] for c in cands}
    for r in runs:
        if r["label"] == "A":
            continue
        (var,) = r["env"].keys()
        c = var[len("FIELD_SCALE_"):]
        (ups if r["label"].startswith("U") else downs)[c].append(r["result"])
    pert = {c: list(zip(ups[c], downs[c])) for c in cands}
    sigma = noise_floor(baselines)
    sigma_r = {m: robust_sigma([math.log(max(b[m], 1e-9)) for b in baselines]) for m in METRICS}
    tq = t975(len(baselines) - 1)
    elast = {}
    for c in cands:
        elast[c] = {}
        for m in METRICS:
            es = [(math.log(u[m]) - math.log(d[m])) / L for u, d in pert[c]]
            e = statistics.fmean(es)
            half = tq * sigma[m] * math.sqrt(2 / len(es)) / L
            med = statistics.median(es)
            half_r = tq * sigma_r[m] * math.sqrt(2 / len(es)) / L
            entry = {"elasticity": e, "interval": [e - half, e + half], "per_round": es,
                     "median_of_rounds": med, "interval_robust": [med - half_r, med + half_r]}
            if len(es) >= 2:
                hr = t975(len(es) - 1) * statistics.stdev(es) / math.sqrt(len(es))
                entry["interval_rounds"] = [e - hr, e + hr]
            elast[c][m] = entry

    def pick(key, ikey):
        ranked = sorted(cands, key=lambda c: elast[c]["mean_us"][key], reverse=True)
        runner = ranked[1] if len(ranked) > 1 else None
        sep = runner is None or (elast[ranked[0]]["mean_us"][ikey][0]
                                 > elast[runner]["mean_us"][ikey][1])
        return ranked, runner, sep

    ranked, runner, sep = pick("elasticity", "interval")
    culprit = ranked[0]
    sep_rounds = None
    if runner is not None and "interval_rounds" in elast[culprit]["mean_us"]:
        sep_rounds = (elast[culprit]["mean_us"]["interval_rounds"][0]
                      > elast[runner]["mean_us"]["interval_rounds"][1])
    r_ranked, r_runner, r_sep = pick("median_of_rounds", "interval_robust")
    return {
        "delta": delta, "rounds": rounds, "seconds": seconds, "env": env_base,
        "noise_floor": sigma, "noise_floor_robust": sigma_r, "baseline": summary_of(baselines),
        "elasticities": elast, "ranking": ranked,
        "measured_culprit": culprit, "runner_up": runner,
        "separated": sep, "separated_by_round_spread": sep_rounds,
        "agrees_with_manifest": culprit in spec["culprit"],
        "robust": {"what": "median over rounds, interval from the MAD noise floor",
                   "ranking": r_ranked, "measured_culprit": r_ranked[0], "runner_up": r_runner,
                   "separated": r_sep},
        "runs": runs,
    }


def measure_before_after(sc, args, key, before_env, after_env, before_vars, after_vars, result,
                         sigma=None):
    before, after, runs = [], [], []
    n = 2 * args.rounds
    for rnd in range(args.rounds):
        order = [("before", before_env, before_vars, before), ("after", after_env, after_vars, after)]
        if rnd % 2:
            order.reverse()
        for tag, env, vars_, acc in order:
            t = time.monotonic()
            q, r = guarded_run(sc, args.seconds, env_extra=env, variables=vars_)
            acc.append(r)
            runs.append({"label": tag, "env": env, "vars": vars_, **q, "result": r})
            log(f"[{sc.name}] {key} {len(runs)}/{n} {tag:<7} mean={r['mean_us']:9.1f}us "
                f"p50={r['p50_us']:9.1f} p99={r['p99_us']:9.1f} tput={r['throughput']:8.1f} "
                f"cpu={r['cpu_ours']:.2f}+{r['cpu_others']:.2f} ({time.monotonic() - t:.1f}s)")
    if sigma is None:  # noise floor from both sides' own spread
        sigma = {}
        for m in METRICS:
            dev = []
            for side in (before, after):
                xs = [math.log(r[m]) for r in side]
                mu = statistics.fmean(xs)
                dev += [x - mu for x in xs]
            sigma[m] = math.sqrt(sum(d * d for d in dev) / max(1, len(dev) - 2))
    result[key] = {"before": {"env": before_env, "vars": before_vars, "summary": summary_of(before)},
                   "after": {"env": after_env, "vars": after_vars, "summary": summary_of(after)},
                   "noise_floor": sigma, "change": compare(before, after, sigma), "runs": runs}


def load_summary(result):
    """CPU used by our programs and by everything else during the runs (cores)."""
    rs = []
    for key in ("perturbation", "deploy", "config"):
        rs += [r["result"] for r in result.get(key, {}).get("runs", [])]
    if not rs:
        return {}
    return {"cpu_ours_mean": round(statistics.fmean(r["cpu_ours"] for r in rs), 3),
            "cpu_ours_max": max(r["cpu_ours"] for r in rs),
            "cpu_others_mean": round(statistics.fmean(r["cpu_others"] for r in rs), 3),
            "cpu_others_max": max(r["cpu_others"] for r in rs),
            "runs_with_others_over_0.3_cores": sum(1 for r in rs if r["cpu_others"] > 0.3),
            "runs": len(rs)}


QUIET = Quiet(0.15, 0, 0)


def perturbation_verdict(p):
    el = p["elasticities"]
    return {
        "measured_culprit": p["measured_culprit"],
        "culprit_mean_elasticity": el[p["measured_culprit"]]["mean_us"]["elasticity"],
        "runner_up": p["runner_up"],
        "runner_up_mean_elasticity": (el[p["runner_up"]]["mean_us"]["elasticity"]
                                      if p["runner_up"] else None),
        "separated": p["separated"], "noise_floor_mean": p["noise_floor"]["mean_us"],
        "agrees_with_manifest": p["agrees_with_manifest"],
        "robust_culprit": p["robust"]["measured_culprit"],
        "robust_separated": p["robust"]["separated"]}


def reanalyze(spec, path):
    """Recomputes a truth file's perturbation analysis from its stored runs (no new runs)."""
    with open(path) as f:
        t = json.load(f)
    if "perturbation" not in t:
        return None
    old = t["perturbation"]
    t["perturbation"] = analyze_perturbation(spec, old["runs"], old["delta"], old["rounds"],
                                             old["seconds"], old["env"])
    t["verdict"] = perturbation_verdict(t["perturbation"])
    t["reanalyzed"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(path, "w") as f:
        json.dump(t, f, indent=1)
        f.write("\n")
    return t["verdict"]


def measure(sc, args):
    started = time.time()
    result = {"scenario": sc.name, "kind": sc.kind, "description": sc.spec.get("description"),
              "culprit_declared": sc.spec["culprit"], "candidates": sc.spec["candidates"],
              "red_herrings": sc.spec.get("red_herrings", []), "idle": sc.spec.get("idle", []),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
              "machine": machine_info(), "loadavg_before": loadavg()}
    deploy = sc.spec.get("deploy")
    config = sc.spec.get("config")
    if sc.kind == "debian":
        measure_before_after(sc, args, "config", {}, {}, config["before"], config["after"], result)
        ch = result["config"]["change"]["mean_us"]
        result["verdict"] = {"mean_latency_ratio": ch["ratio"],
                             "interval": ch["ratio_interval"],
                             "significant": ch["interval"][0] > 0 or ch["interval"][1] < 0}
    else:
        env_base = deploy["env_after"] if deploy else {}
        measure_perturbation(sc, args, env_base, result)
        if deploy:
            measure_before_after(sc, args, "deploy", deploy["env_before"], deploy["env_after"],
                                 {}, {}, result)
        result["verdict"] = perturbation_verdict(result["perturbation"])
    result["loadavg_after"] = loadavg()
    result["load"] = load_summary(result)
    result["nice"] = NICE[0]
    result["quiet_policy"] = {"threshold": QUIET.threshold, "max_wait_s": QUIET.wait,
                              "budget_s": QUIET.budget, "retry_others": QUIET.retry_others,
                              "waited_so_far_s": round(QUIET.waited, 1)}
    result["duration_s"] = round(time.time() - started, 1)
    return result


def print_summary(specs, out_dir):
    """One line per scenario from the truth files already measured."""
    for s in specs:
        path = os.path.join(out_dir, f"{s['name']}.json")
        if not os.path.exists(path):
            print(f"{s['name']:<20} (not measured)")
            continue
        with open(path) as f:
            t = json.load(f)
        v = t["verdict"]
        others = t.get("load", {}).get("cpu_others_mean")
        if "measured_culprit" in v:
            el = t["perturbation"]["elasticities"]
            c, r = v["measured_culprit"], v["runner_up"]
            ci, ri = el[c]["mean_us"]["interval"], (el[r]["mean_us"]["interval"] if r else None)
            line = (f"{s['name']:<20} culprit={c} e={v['culprit_mean_elasticity']:.2f} "
                    f"[{ci[0]:.2f},{ci[1]:.2f}]  runner-up={r} e={v['runner_up_mean_elasticity']:.2f}"
                    + (f" [{ri[0]:.2f},{ri[1]:.2f}]" if ri else "")
                    + f"  sep={v['separated']} sigma={v['noise_floor_mean']:.3f}"
                    + f" ok={v['agrees_with_manifest']}"
                    + (f" robust={v['robust_culprit']}/sep={v['robust_separated']}"
                       if "robust_culprit" in v else ""))
            if "deploy" in t:
                d = t["deploy"]["change"]["mean_us"]
                line += (f" deploy x{d['ratio']:.2f} [{d['ratio_interval'][0]:.2f},"
                         f"{d['ratio_interval'][1]:.2f}]")
        else:
            line = (f"{s['name']:<20} config x{v['mean_latency_ratio']:.2f} "
                    f"[{v['interval'][0]:.2f},{v['interval'][1]:.2f}] significant={v['significant']}")
        print(line + (f" others={others:.2f}cores" if others is not None else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*")
    ap.add_argument("--bin", default=os.path.join(HERE, "bin"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--delta", type=float, default=0.3)
    ap.add_argument("--out", default=os.path.join(HERE, "truth"))
    ap.add_argument("--manifest", default=os.path.join(HERE, "manifest.json"))
    ap.add_argument("--no-debian", action="store_true", help="skip the real-program scenarios")
    ap.add_argument("--quiet-wait", type=float, default=5.0,
                    help="before each run wait up to this many seconds for other CPU use to drop")
    ap.add_argument("--quiet-cpu", type=float, default=0.15,
                    help="other CPU use (fraction of all CPUs) counted as quiet")
    ap.add_argument("--quiet-budget", type=float, default=300.0,
                    help="total seconds of such waiting in this invocation")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness increment for the programs (negative needs root; ignored "
                         "otherwise): shields them from builds running beside")
    ap.add_argument("--retry-others", type=float, default=0.5,
                    help="redo a run (once) when other processes used more than this many "
                         "cores during it, while the quiet budget lasts")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--summary", action="store_true", help="print the measured truth files")
    ap.add_argument("--reanalyze", action="store_true",
                    help="recompute the elasticities of existing truth files from their runs")
    args = ap.parse_args()
    QUIET.threshold, QUIET.wait, QUIET.budget = args.quiet_cpu, args.quiet_wait, args.quiet_budget
    QUIET.retry_others = args.retry_others
    NICE[0] = args.nice if os.geteuid() == 0 or args.nice > 0 else 0
    if not 0 < args.delta < 1 or args.rounds < 1 or args.seconds < 1:
        ap.error("need 0 < delta < 1, rounds >= 1, seconds >= 1")
    with open(args.manifest) as f:
        manifest = json.load(f)
    specs = manifest["scenarios"]
    if args.summary:
        print_summary(specs, args.out)
        return 0
    if args.reanalyze:
        for spec in specs:
            path = os.path.join(args.out, f"{spec['name']}.json")
            if (args.scenarios and spec["name"] not in args.scenarios) or not os.path.exists(path):
                continue
            v = reanalyze(spec, path)
            if v:
                log(f"[{spec['name']}] reanalyzed -> {json.dumps(v)}")
        return 0
    if args.list:
        for s in specs:
            print(f"{s['name']:<22} {s.get('kind', 'synthetic'):<9} culprit={','.join(s['culprit'])}")
        return 0
    names = {s["name"] for s in specs}
    for n in args.scenarios:
        if n not in names:
            ap.error(f"unknown scenario {n}")
    # A held-out scenario (the outside check) is measured only when named.
    chosen = [s for s in specs if (s["name"] in args.scenarios
                                   or (not args.scenarios and not s.get("held_out")))
              and not (args.no_debian and s.get("kind") == "debian")]
    build = subprocess.run([os.path.join(HERE, "build.sh"), args.bin], capture_output=True, text=True)
    if build.returncode != 0:
        log(build.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    t0 = time.monotonic()
    log(f"truth: {len(chosen)} scenario(s), rounds={args.rounds} seconds={args.seconds} "
        f"delta={args.delta}, load {loadavg()}")
    failed = []
    for spec in chosen:
        sc = Scenario(spec, args.bin)
        miss = sc.missing()
        if miss:
            log(f"[{sc.name}] skipped: missing {', '.join(miss)} (see apt-packages.txt)")
            failed.append(sc.name)
            continue
        try:
            result = measure(sc, args)
        except RunError as e:
            log(f"[{sc.name}] FAILED: {e}")
            failed.append(sc.name)
            continue
        path = os.path.join(args.out, f"{sc.name}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        v = result["verdict"]
        log(f"[{sc.name}] -> {json.dumps(v)} ({result['duration_s']} s) wrote {path}")
    log(f"truth: done in {time.monotonic() - t0:.0f} s ({QUIET.waited:.0f} s waiting for quiet), "
        f"load {loadavg()}"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
