//! `critpath eval --field`: the field benchmark. Each scenario of `tests/field/manifest.json`
//! (programs written outside critpath's own method, and real programs from Debian, each with
//! its culprit measured by experiment) is run for real and explained the two ways a user
//! would: under `critpath run`, through the HTTP API over the store (`/api/v1/explain`, and
//! `/api/v1/regressions` around a deploy or a configuration change), and under `critpath
//! record` (`explain --profile`, `regressions --before/--after`). Every answer is scored: the
//! culprit's rank, red herrings ranked above it, idle functions in the top three.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::EvalArgs;

/// The benchmark's manifest (`tests/field/manifest.json`).
#[derive(Debug, Deserialize)]
struct Manifest {
    scenarios: Vec<Scenario>,
    /// The scenarios of the quick set (the CI subset).
    #[serde(default)]
    quick: Vec<String>,
}

/// One scenario: its programs, what to explain, and its measured truth.
#[derive(Clone, Debug, Deserialize)]
struct Scenario {
    name: String,
    #[serde(default)]
    kind: String,
    programs: Vec<Program>,
    /// The role whose program measures the requests (and whose exit ends the run).
    measured_by: String,
    explain: ExplainTarget,
    culprit: Vec<String>,
    #[serde(default)]
    red_herrings: Vec<String>,
    #[serde(default)]
    idle: Vec<String>,
    /// A deploy: the environment of the version before and after.
    #[serde(default)]
    deploy: Option<Deploy>,
    /// A configuration experiment: placeholder values before and after.
    #[serde(default)]
    config: Option<ConfigChange>,
    #[serde(default)]
    vars: HashMap<String, String>,
    #[serde(default)]
    setup: Setup,
    /// An outside check, never tuned on: run only when named with `--scenario`.
    #[serde(default)]
    held_out: bool,
}

#[derive(Clone, Debug, Deserialize)]
struct Program {
    role: String,
    argv: Vec<String>,
    #[serde(default)]
    env: HashMap<String, String>,
    /// Seconds to wait after starting it (a server getting ready).
    #[serde(default)]
    start_delay: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
struct ExplainTarget {
    /// The executable's name.
    exe: String,
    /// The file /proc/PID/exe names, when the name is a link to another file.
    #[serde(default)]
    exe_file: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct Deploy {
    env_before: HashMap<String, String>,
    env_after: HashMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
struct ConfigChange {
    before: HashMap<String, String>,
    after: HashMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Setup {
    #[serde(default)]
    mkdir: Vec<String>,
    #[serde(default)]
    files: Vec<SetupFile>,
    /// Commands run to completion, in order, before the programs start (a database created):
    /// not part of the change, so the run's start (the moment `regressions` is asked about)
    /// comes after them.
    #[serde(default)]
    run: Vec<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
struct SetupFile {
    path: String,
    /// A template beside the manifest, its placeholders filled.
    template: String,
}

/// Which version of a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Before,
    After,
}

/// One scored answer.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    /// The scenario.
    pub scenario: String,
    /// `synthetic` or `debian`.
    pub kind: String,
    /// `store` (critpath run + HTTP API) or `recording` (critpath record).
    pub path: &'static str,
    /// `explain` or `regressions`.
    pub question: &'static str,
    /// The culprit's rank (0: first); `None` when it was not ranked at all.
    pub rank: Option<usize>,
    /// Red herrings ranked above the culprit.
    pub herrings_above: Vec<String>,
    /// Idle functions (waits for new work) among the first three, ranked for waiting.
    pub idle_in_top3: Vec<String>,
    /// Those functions among the first three ranked for their own CPU time (reported, not
    /// counted against the answer).
    pub loop_cpu_in_top3: Vec<String>,
    /// The first five functions of the answer.
    pub top: Vec<String>,
    /// The answer's one-line reasons for its first three functions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
    /// Why the case could not be scored, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Case {
    fn top1(&self) -> bool {
        self.rank == Some(0)
    }

    fn top3(&self) -> bool {
        self.rank.is_some_and(|r| r < 3)
    }

    /// The case's Done-when conditions besides top-1: culprit in the top 3, no red herring
    /// above it, no idle function in the top 3.
    fn clean(&self) -> bool {
        self.top3() && self.herrings_above.is_empty() && self.idle_in_top3.is_empty()
    }
}

/// The benchmark's result.
#[derive(Debug, Serialize)]
pub struct FieldReport {
    /// Seconds each scenario ran per window.
    pub seconds: u64,
    /// Every scored answer.
    pub cases: Vec<Case>,
    /// Scenarios left out, with why.
    pub skipped: BTreeMap<String, String>,
}

/// Whether a ranked function is one of `names` (C names, or the last part of a path).
fn is(function: &str, names: &[String]) -> bool {
    names
        .iter()
        .any(|n| function == n || function.ends_with(&format!("::{n}")))
}

/// The scenarios to run: those `named`, else the quick set, else all but the held-out ones (an
/// outside check runs only when named).
fn selected<'a>(manifest: &'a Manifest, named: &[String], quick: bool) -> Vec<&'a Scenario> {
    manifest
        .scenarios
        .iter()
        .filter(|s| {
            if !named.is_empty() {
                named.contains(&s.name)
            } else if quick {
                manifest.quick.contains(&s.name)
            } else {
                !s.held_out
            }
        })
        .collect()
}

/// The culprit's rank, the red herrings above it, and the idle functions (waits for new work)
/// among the first three that are ranked for waiting — a loop function ranked for the CPU it
/// runs itself (a `send` system call, a clock read) is not ranked for idle time.
fn score(
    scenario: &Scenario,
    functions: &[String],
    for_waiting: &[bool],
) -> (Option<usize>, Vec<String>, Vec<String>) {
    let rank = functions.iter().position(|f| is(f, &scenario.culprit));
    let above = &functions[..rank.unwrap_or(functions.len())];
    let herrings = above
        .iter()
        .filter(|f| is(f, &scenario.red_herrings))
        .cloned()
        .collect();
    let idle = functions
        .iter()
        .zip(for_waiting.iter().chain(std::iter::repeat(&true)))
        .take(3)
        .filter(|(f, waiting)| **waiting && is(f, &scenario.idle))
        .map(|(f, _)| f.clone())
        .collect();
    (rank, herrings, idle)
}

/// `pids` and every process descended from them (from `/proc/PID/stat`'s parent ids).
fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The parent id is the second field after the name's last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut out = pids.to_vec();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
            }
        }
        i += 1;
    }
    out
}

/// Fills `{name}` placeholders.
fn fill(text: &str, values: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Running programs of a scenario, stopped (SIGTERM, then SIGKILL) when dropped.
struct Running {
    children: Vec<(String, Child)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on a child we started and have not reaped.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, c) in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A scenario's window: when its measured program ran, and the pids of its other programs.
struct Window {
    /// When the run's first program started: the moment of the change (a deploy, a new
    /// configuration), which `regressions` is asked about.
    started_ms: i64,
    from_ms: i64,
    to_ms: i64,
}

/// How long the start of each run is left out of its window (programs settling).
const WARMUP: Duration = Duration::from_millis(1500);

struct Bench {
    dir: PathBuf,
    bin: PathBuf,
    seconds: u64,
    critpath: PathBuf,
    work: tempfile::TempDir,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Bench {
    fn program_path(&self, argv0: &str) -> PathBuf {
        if argv0.starts_with('/') {
            PathBuf::from(argv0)
        } else {
            self.bin.join(argv0)
        }
    }

    /// Placeholder values of a run.
    fn values(&self, sc: &Scenario, variant: Variant) -> HashMap<String, String> {
        let mut values = sc.vars.clone();
        values.insert("seconds".into(), self.seconds.to_string());
        values.insert("server_seconds".into(), (self.seconds + 15).to_string());
        values.insert("dir".into(), format!("/tmp/critpath-field-{}", sc.name));
        if let Some(c) = &sc.config {
            values.extend(match variant {
                Variant::Before => c.before.clone(),
                Variant::After => c.after.clone(),
            });
        }
        values
    }

    /// Runs a scenario's programs until its measured program exits; `during` is called once
    /// the warm-up is over, with the pids of the programs to follow (all but a separate
    /// measuring client), and may start a recording, which is waited for.
    fn run(
        &self,
        sc: &Scenario,
        variant: Variant,
        during: impl FnOnce(&[u32]) -> anyhow::Result<Option<Child>>,
    ) -> anyhow::Result<Window> {
        let values = self.values(sc, variant);
        let dir = PathBuf::from(&values["dir"]);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for d in &sc.setup.mkdir {
            std::fs::create_dir_all(fill(d, &values))?;
        }
        for f in &sc.setup.files {
            let template = std::fs::read_to_string(self.dir.join(&f.template))
                .with_context(|| format!("reading {}", f.template))?;
            std::fs::write(fill(&f.path, &values), fill(&template, &values))?;
        }
        for command in &sc.setup.run {
            let argv: Vec<String> = command.iter().map(|a| fill(a, &values)).collect();
            let program = argv.first().context("an empty setup command")?;
            let out = Command::new(self.program_path(program))
                .args(&argv[1..])
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running the setup command {program}"))?;
            if !out.status.success() {
                bail!(
                    "{}: the setup command {} failed ({}): {}",
                    sc.name,
                    argv.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let env = match (&sc.deploy, variant) {
            (Some(d), Variant::Before) => d.env_before.clone(),
            (Some(d), Variant::After) => d.env_after.clone(),
            (None, _) => HashMap::new(),
        };
        let mut running = Running {
            children: Vec::new(),
        };
        let mut measured_at = None;
        let started_ms = now_ms();
        for p in &sc.programs {
            let argv: Vec<String> = p.argv.iter().map(|a| fill(a, &values)).collect();
            let path = self.program_path(&argv[0]);
            let measured = p.role == sc.measured_by;
            let mut cmd = Command::new(&path);
            cmd.args(&argv[1..])
                .envs(&env)
                .envs(&p.env)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .stdout(if measured {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {}", path.display()))?;
            if measured {
                measured_at = Some(Instant::now());
            }
            running.children.push((p.role.clone(), child));
            let delay = p.start_delay.unwrap_or(if measured { 0.0 } else { 0.3 });
            std::thread::sleep(Duration::from_secs_f64(delay));
        }
        let started = measured_at.context("no program has the measured role")?;
        std::thread::sleep(WARMUP.saturating_sub(started.elapsed()));
        let from_ms = now_ms();
        let separate = running.children.len() > 1;
        let follow: Vec<u32> = running
            .children
            .iter()
            .filter(|(role, _)| !separate || *role != sc.measured_by)
            .map(|(_, c)| c.id())
            .collect();
        // With the processes they forked already (a helper, nginx's workers): the recorder
        // follows only the forks made after it starts.
        let recorder = during(&with_descendants(&follow))?;
        let limit = Duration::from_secs(self.seconds + 30);
        let measured = running
            .children
            .iter_mut()
            .find(|(role, _)| *role == sc.measured_by)
            .map(|(_, c)| c)
            .expect("the measured program");
        loop {
            if measured.try_wait()?.is_some() {
                break;
            }
            if started.elapsed() > limit {
                bail!("{}: the measured program did not exit", sc.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let to_ms = now_ms();
        if let Some(mut r) = recorder {
            let status = r.wait()?;
            if !status.success() {
                bail!("{}: critpath record failed ({status})", sc.name);
            }
        }
        // The servers outlive the window by more than the store's 1-s interval, so that their
        // shutdown (a SIGTERM handler waking every thread) lands in an interval the window
        // does not read, as a service's would that keeps running.
        std::thread::sleep(Duration::from_millis(1500));
        drop(running);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Window {
            started_ms,
            from_ms,
            to_ms,
        })
    }

    fn selector(sc: &Scenario) -> String {
        let exe = sc.explain.exe_file.as_deref().unwrap_or(&sc.explain.exe);
        let base = exe.rsplit('/').next().unwrap_or(exe);
        // Regex metacharacters as one-character classes: the selector's string syntax knows
        // only the `\\` and `\"` escapes.
        let pattern: String = base
            .chars()
            .map(|c| {
                if ".+*?()|[]{}^$".contains(c) {
                    format!("[{c}]")
                } else {
                    c.to_string()
                }
            })
            .collect();
        format!("{{exe=~\".*/{pattern}\"}}")
    }

    /// Starts `critpath record` of `pids` for the rest of the run.
    fn record(&self, pids: &[u32], out: &Path) -> anyhow::Result<Child> {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let seconds = (self.seconds as f64 - WARMUP.as_secs_f64()).max(1.0);
        Command::new(&self.critpath)
            .arg("record")
            .args(["--off-cpu", "--format", "pprof"])
            .arg("--wakeups")
            .arg(out.with_extension("wakeups.json"))
            .arg("-o")
            .arg(out.with_extension("pb.gz"))
            .args(["-p", &list.join(","), "-d", &format!("{seconds:.1}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting critpath record")
    }

    fn critpath_json(&self, args: &[String]) -> anyhow::Result<Value> {
        let out = Command::new(&self.critpath)
            .args(args)
            .output()
            .context("running critpath")?;
        if !out.status.success() {
            bail!(
                "critpath {}: {}",
                args.first().map_or("", String::as_str),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// An answer: its functions in order, whether each is ranked for waiting (not for CPU time),
/// and the reasons given for the first three.
struct Answer {
    functions: Vec<String>,
    for_waiting: Vec<bool>,
    why: Vec<String>,
}

/// The functions of an explanation (`functions`) or a regressions report (`suspects`).
fn ranked(answer: &Value, key: &str) -> Answer {
    let items = answer[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    Answer {
        functions: items
            .iter()
            .filter_map(|f| f["function"].as_str().map(str::to_owned))
            .collect(),
        // The function's heaviest route was a wait (in it, or for a thread blocked in it), or
        // no route is known; for regressions, and its share of the requests' time changed.
        for_waiting: items
            .iter()
            .filter(|f| f["function"].is_string())
            .map(|f| {
                let waiting = f["route"]
                    .as_str()
                    .is_none_or(|route| route == "blocked" || route == "waited_blocked");
                let changed = f["critical_path_after"].as_f64().is_none_or(|after| {
                    (after - f["critical_path_before"].as_f64().unwrap_or(0.0)).abs() >= 0.005
                });
                waiting && changed
            })
            .collect(),
        why: items
            .iter()
            .take(3)
            .filter_map(|f| f["why"].as_str().map(str::to_owned))
            .collect(),
    }
}

/// `critpath run` in the background, serving on a free port of loopback.
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(bench: &Bench) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = bench.work.path().join("store");
        let child = Command::new(&bench.critpath)
            .arg("run")
            .arg("--data-dir")
            .arg(&data)
            .args(["--interval", "1s", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--model")
            .arg(bench.work.path().join("no-model"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting critpath run")?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent,
        };
        let started = Instant::now();
        loop {
            if let Ok(v) = server.get("/api/v1/health", &[])
                && v["sampler"]["running"] == true
            {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("critpath run did not start sampling within a minute");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in query {
            request = request.query(k, v);
        }
        let mut response = request.call()?;
        let status = response.status();
        let body = response.body_mut().read_to_string()?;
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}: {}", body.trim());
        }
        Ok(serde_json::from_str(&body)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// Waits until the store holds a window's last interval.
fn settle() {
    std::thread::sleep(Duration::from_millis(2500));
}

fn case(
    sc: &Scenario,
    path: &'static str,
    question: &'static str,
    answer: anyhow::Result<Answer>,
) -> Case {
    let (functions, for_waiting, why, error) = match answer {
        Ok(a) => (a.functions, a.for_waiting, a.why, None),
        Err(e) => (Vec::new(), Vec::new(), Vec::new(), Some(format!("{e:#}"))),
    };
    let (rank, herrings_above, idle_in_top3) = score(sc, &functions, &for_waiting);
    let loop_cpu_in_top3 = functions
        .iter()
        .take(3)
        .filter(|f| is(f, &sc.idle) && !idle_in_top3.contains(f))
        .cloned()
        .collect();
    Case {
        scenario: sc.name.clone(),
        kind: if sc.kind.is_empty() {
            "synthetic".into()
        } else {
            sc.kind.clone()
        },
        path,
        question,
        rank,
        herrings_above,
        idle_in_top3,
        loop_cpu_in_top3,
        top: functions.into_iter().take(5).collect(),
        why,
        error,
    }
}

/// Scores one scenario on the store path: explain over the slow version's window, and around
/// a deploy or configuration change, regressions.
fn store_cases(bench: &Bench, server: &Server, sc: &Scenario) -> Vec<Case> {
    let query = Bench::selector(sc);
    let mut cases = Vec::new();
    let changes = sc.deploy.is_some() || sc.config.is_some();
    let before = if changes {
        Some(bench.run(sc, Variant::Before, |_| Ok(None)))
    } else {
        None
    };
    let after = bench.run(sc, Variant::After, |_| Ok(None));
    settle();
    let explain = after
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|w| {
            let v = server.get(
                "/api/v1/explain",
                &[
                    ("query", query.clone()),
                    ("from", w.from_ms.to_string()),
                    ("to", w.to_ms.to_string()),
                    ("method", "critical_path".into()),
                    ("top", "50".into()),
                ],
            )?;
            Ok(ranked(&v, "functions"))
        });
    cases.push(case(sc, "store", "explain", explain));
    if let Some(before) = before {
        let answer = match (&before, &after) {
            (Ok(b), Ok(a)) => (|| {
                // Around the change itself (the new version's start, as a deploy marker
                // would say), not the after run's measured window, which begins after its
                // warm-up: `at` there put the new version's first seconds in the *before*
                // window, which then held as much of the culprit as the after one.
                let window_s = ((b.to_ms - b.from_ms).min(a.to_ms - a.from_ms) / 1000).max(1);
                let v = server.get(
                    "/api/v1/regressions",
                    &[
                        ("query", query.clone()),
                        ("at", a.started_ms.to_string()),
                        ("window", format!("{window_s}s")),
                        ("method", "graph".into()),
                        ("top", "50".into()),
                    ],
                )?;
                Ok(ranked(&v, "suspects"))
            })(),
            (Err(e), _) | (_, Err(e)) => Err(anyhow::anyhow!("{e:#}")),
        };
        cases.push(case(sc, "store", "regressions", answer));
    }
    cases
}

/// Scores one scenario on the recording path.
fn recording_cases(bench: &Bench, sc: &Scenario) -> Vec<Case> {
    let query = Bench::selector(sc);
    let mut cases = Vec::new();
    let changes = sc.deploy.is_some() || sc.config.is_some();
    let out = |v: &str| bench.work.path().join(format!("{}-{v}", sc.name));
    let recorded = |variant: Variant, name: &str| -> anyhow::Result<PathBuf> {
        let base = out(name);
        bench.run(sc, variant, |pids| bench.record(pids, &base).map(Some))?;
        Ok(base)
    };
    let before = changes.then(|| recorded(Variant::Before, "before"));
    let after = recorded(Variant::After, "after");
    let s = |p: &Path, ext: &str| p.with_extension(ext).to_string_lossy().into_owned();
    let explain = after
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|a| {
            let v = bench.critpath_json(&[
                "explain".into(),
                "--profile".into(),
                s(a, "pb.gz"),
                "--wakeups".into(),
                s(a, "wakeups.json"),
                "--query".into(),
                query.clone(),
                "--method".into(),
                "critical_path".into(),
                "--top".into(),
                "50".into(),
                "--json".into(),
            ])?;
            Ok(ranked(&v, "functions"))
        });
    cases.push(case(sc, "recording", "explain", explain));
    if let Some(before) = before {
        let answer = match (&before, &after) {
            (Ok(b), Ok(a)) => bench
                .critpath_json(&[
                    "regressions".into(),
                    "--before".into(),
                    s(b, "pb.gz"),
                    "--before-wakeups".into(),
                    s(b, "wakeups.json"),
                    "--after".into(),
                    s(a, "pb.gz"),
                    "--after-wakeups".into(),
                    s(a, "wakeups.json"),
                    "--query".into(),
                    query.clone(),
                    "--method".into(),
                    "graph".into(),
                    "--top".into(),
                    "50".into(),
                    "--json".into(),
                ])
                .map(|v| ranked(&v, "suspects")),
            (Err(e), _) | (_, Err(e)) => Err(anyhow::anyhow!("{e:#}")),
        };
        cases.push(case(sc, "recording", "regressions", answer));
    }
    cases
}

/// Runs the field benchmark (see the module docs).
pub fn eval(args: &EvalArgs, dir: &Path) -> anyhow::Result<FieldReport> {
    let manifest_path = dir.join("manifest.json");
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{}: not a field manifest", manifest_path.display()))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the field benchmark loads eBPF programs: run it as root");
    }
    let bin = args.field_bin.clone().unwrap_or_else(|| dir.join("bin"));
    let build = dir.join("build.sh");
    if build.exists() {
        let status = Command::new("bash")
            .arg(&build)
            .arg(&bin)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", build.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", build.display());
        }
    }
    let bench = Bench {
        dir: dir.to_owned(),
        bin,
        seconds: args.field_seconds.max(3),
        critpath: std::env::current_exe().context("finding the critpath binary")?,
        work: {
            let mut work = tempfile::tempdir().context("creating a work directory")?;
            // CRITPATH_FIELD_KEEP=1 keeps the stores and recordings to look at afterwards.
            if std::env::var_os("CRITPATH_FIELD_KEEP").is_some() {
                eprintln!(
                    "critpath: keeping the work directory {}",
                    work.path().display()
                );
                work.disable_cleanup(true);
            }
            work
        },
    };
    let wanted = selected(&manifest, &args.scenarios, args.quick);
    if wanted.is_empty() {
        bail!("no scenario selected (see {})", manifest_path.display());
    }
    let mut report = FieldReport {
        seconds: bench.seconds,
        cases: Vec::new(),
        skipped: BTreeMap::new(),
    };
    let mut runnable = Vec::new();
    for sc in wanted {
        let missing: Vec<String> = sc
            .programs
            .iter()
            .map(|p| bench.program_path(&p.argv[0]))
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            runnable.push(sc);
        } else {
            eprintln!(
                "critpath: skipping {}: {} not found",
                sc.name,
                missing.join(", ")
            );
            report.skipped.insert(
                sc.name.clone(),
                format!("not found: {}", missing.join(", ")),
            );
        }
    }
    let store = args.paths != "recording";
    let recording = args.paths != "store";
    if store {
        let server = Server::start(&bench)?;
        for (i, sc) in runnable.iter().enumerate() {
            eprintln!(
                "critpath: [{}/{}] {} (store)",
                i + 1,
                runnable.len(),
                sc.name
            );
            report.cases.extend(store_cases(&bench, &server, sc));
        }
    }
    if recording {
        for (i, sc) in runnable.iter().enumerate() {
            eprintln!(
                "critpath: [{}/{}] {} (recording)",
                i + 1,
                runnable.len(),
                sc.name
            );
            report.cases.extend(recording_cases(&bench, sc));
        }
    }
    Ok(report)
}

/// Prints the report: one row per case, then the rates per path.
pub fn print(report: &FieldReport) {
    println!(
        "{:<20} {:<9} {:<10} {:<11} {:>5}  {:<28} first functions",
        "scenario", "kind", "path", "question", "rank", "problems"
    );
    for c in &report.cases {
        let mut problems = Vec::new();
        if let Some(e) = &c.error {
            problems.push(format!("error: {e}"));
        }
        if !c.herrings_above.is_empty() {
            problems.push(format!("herring above: {}", c.herrings_above.join(",")));
        }
        if !c.idle_in_top3.is_empty() {
            problems.push(format!("idle in top 3: {}", c.idle_in_top3.join(",")));
        }
        println!(
            "{:<20} {:<9} {:<10} {:<11} {:>5}  {:<28} {}",
            c.scenario,
            c.kind,
            c.path,
            c.question,
            c.rank.map_or("-".to_owned(), |r| (r + 1).to_string()),
            if problems.is_empty() {
                "-".to_owned()
            } else {
                problems.join("; ")
            },
            c.top.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for path in ["store", "recording"] {
        let cases: Vec<&Case> = report.cases.iter().filter(|c| c.path == path).collect();
        if cases.is_empty() {
            continue;
        }
        let n = cases.len() as f64;
        let rate = |f: &dyn Fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count() as f64 / n;
        println!(
            "{path}: {} cases, top-1 {:.2}, top-3 {:.2}, top-3 with no red herring above and no idle function in the top 3 {:.2}",
            cases.len(),
            rate(&Case::top1),
            rate(&Case::top3),
            rate(&Case::clean)
        );
    }
    for (name, why) in &report.skipped {
        println!("skipped {name}: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/field/manifest.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The outside check (PostgreSQL) runs only when named: not in the whole set, not in the
    /// quick set; every other scenario is in the whole set.
    #[test]
    fn the_held_out_check_runs_only_when_named() {
        let m = manifest();
        let names = |v: Vec<&Scenario>| v.into_iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let all = names(selected(&m, &[], false));
        assert!(!all.contains(&"postgres_commit".to_owned()), "{all:?}");
        assert_eq!(all.len(), m.scenarios.len() - 1, "{all:?}");
        assert!(!names(selected(&m, &[], true)).contains(&"postgres_commit".to_owned()));
        let named = names(selected(&m, &["postgres_commit".to_owned()], false));
        assert_eq!(named, ["postgres_commit"]);
        let pg = m
            .scenarios
            .iter()
            .find(|s| s.name == "postgres_commit")
            .unwrap();
        assert!(pg.held_out);
        assert_eq!(
            pg.setup.run.len(),
            1,
            "the database is made before the change"
        );
    }
}
