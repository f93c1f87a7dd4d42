//! `critpath run`: the agent and the HTTP API in one process, queried over real HTTP while a
//! workload runs.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use critpath_analyzer::export::folded;

use super::common::{critpath, inclusive, kernel_test, run_workload};

pub(super) struct Server {
    child: Child,
    pub(super) addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Starts `critpath run` on an ephemeral loopback port and waits until it serves and samples.
fn start(dir: &std::path::Path) -> Server {
    start_with(dir, &["run", "--interval", "1s"], true)
}

/// Starts a `critpath` server command (`run ...`, `serve ...`) on an ephemeral loopback port
/// and waits until it serves (and samples, when `samples`).
pub(super) fn start_with(dir: &std::path::Path, command: &[&str], samples: bool) -> Server {
    let mut child = Command::new(critpath())
        .args(command)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting critpath");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    let mut sampling = !samples;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("critpath: serving the API on http://") {
            addr = Some(rest.trim().to_owned());
        }
        sampling |= line.contains("critpath agent: sampling");
        if addr.is_some() && sampling {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: addr.expect("the server's address"),
    }
}

fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A plain HTTP/1.1 GET; returns the status and the body.
pub(super) fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Through HTTP: the workload's hot function in /profile, its activity in /series, the
/// function of the second window grown in /diff against the first, health and metrics.
#[test]
fn run_serves_the_store() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr.as_str();
    let (a_pid, a_start, a_end) = run_workload("cpu_ratio", "3");
    // A gap of more than the 1 s interval, so no stored interval overlaps both windows.
    std::thread::sleep(Duration::from_millis(1500));
    let (b_pid, b_start, b_end) = run_workload("multi_thread", "3");
    // The last 1 s interval is written when it ends.
    std::thread::sleep(Duration::from_millis(2500));

    let (status, health) = get(addr, "/api/v1/health");
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["sampler"]["running"], true, "{health}");
    assert_eq!(health["sampler"]["frequency_hz"], 19);
    assert!(health["sampler"]["samples"].as_u64().unwrap() > 0);

    let selector = enc(&format!(r#"{{pid=~"{a_pid}|{b_pid}"}}"#));
    let (status, body) = get(
        addr,
        &format!("/api/v1/profile?format=folded&from=now-5m&query={selector}"),
    );
    assert_eq!(status, 200, "{body}");
    let profile = folded::parse(&body).unwrap();
    assert!(inclusive(&profile, "::hot_a") > 10, "{body}");

    let (status, body) = get(
        addr,
        &format!(
            "/api/v1/series?from={}&to={}&step=1s&group_by=pid&query={selector}",
            a_start - 5_000,
            b_end + 3_000
        ),
    );
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).unwrap();
    let a = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"]["pid"] == a_pid.to_string().as_str())
        .expect("the first workload's series");
    let (mut during, mut outside) = (0.0, 0.0);
    for (v, t) in a["values"]
        .as_array()
        .unwrap()
        .iter()
        .zip(series["timestamps"].as_array().unwrap())
    {
        let t = t.as_i64().unwrap();
        if t >= a_start - 2_000 && t <= a_end + 1_000 {
            during += v.as_f64().unwrap();
        } else {
            outside += v.as_f64().unwrap();
        }
    }
    // 3 s at 19 Hz is up to 57 samples; fewer when the machine is busy with other tests.
    assert!(
        during >= 10.0 && outside == 0.0,
        "cpu_ratio: {during} samples during its run, {outside} outside"
    );

    let (status, body) = get(
        addr,
        &format!(
            "/api/v1/diff?query={selector}&baseline_from={a_start}&baseline_to={a_end}&from={b_start}&to={b_end}"
        ),
    );
    assert_eq!(status, 200, "{body}");
    let diff: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &diff["root"]["children"][0];
    assert_eq!(
        first["name"], "multi_thread",
        "the grown process comes first: {diff}"
    );
    assert!(first["delta_share"].as_f64().unwrap() > 0.5);

    // Both flamebearer answers render in Pyroscope's own flame graph component.
    let (status, body) = get(
        addr,
        &format!(
            "/api/v1/profile?query={selector}&from={a_start}&to={}&format=flamebearer",
            b_end + 3_000
        ),
    );
    assert_eq!(status, 200, "{body}");
    let single: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hot_a = single["flamebearer"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .find(|n| n.ends_with("::hot_a"))
        .expect("hot_a among the names")
        .to_owned();
    pyroscope_renders("single", &body, &[&hot_a, "multi_thread"]);
    let (status, body) = get(
        addr,
        &format!(
            "/api/v1/diff?query={selector}&baseline_from={a_start}&baseline_to={a_end}&from={b_start}&to={b_end}&format=flamebearer"
        ),
    );
    assert_eq!(status, 200, "{body}");
    pyroscope_renders("diff", &body, &["multi_thread", "cpu_ratio"]);

    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("critpath_samples_ingested_total"),
        "{metrics}"
    );
    assert!(metrics.contains("critpath_query_duration_seconds_count{endpoint=\"diff\"} 2"));

    let (status, body) = get(addr, "/api/v1/profile?type=gpu");
    assert_eq!(status, 400);
    assert!(body.contains("\"param\":\"type\""), "{body}");
}

/// `critpath agent --push` (as another host: its own host label) sends its batches to
/// `critpath serve --ingest`, where they are found by host, pid and function through HTTP.
#[test]
fn agent_pushes_to_a_server() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &["serve", "--ingest"], false);
    let addr = server.addr.as_str();
    let mut agent = Command::new(critpath())
        .args([
            "agent",
            "--interval",
            "1s",
            "--no-off-cpu",
            "--host",
            "pushed-host",
        ])
        .args(["--push", &format!("http://{addr}")])
        .current_dir(dir.path()) // a local store would show up here
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting critpath agent --push");
    let mut lines = BufReader::new(agent.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("critpath agent: sampling") {
            break;
        }
    }
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let (pid, start, end) = run_workload("cpu_ratio", "2");
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    let log = log.join().unwrap().join("\n");
    assert!(log.contains("0 dropped"), "{log}");
    assert!(
        !dir.path().join("critpath-data").exists(),
        "a pushing agent keeps no local store"
    );

    let window = format!("from={}&to={}", start - 2_000, end + 3_000);
    let (status, body) = get(addr, &format!("/api/v1/labels/host/values?{window}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"pushed-host\""), "{body}");
    let selector = enc(&format!(r#"{{host="pushed-host",pid="{pid}"}}"#));
    let (status, body) = get(
        addr,
        &format!("/api/v1/profile?{window}&format=folded&query={selector}"),
    );
    assert_eq!(status, 200, "{body}");
    let profile = folded::parse(&body).unwrap();
    // Up to 38 samples in 2 s at 19 Hz; far fewer while other tests load both CPUs.
    assert!(inclusive(&profile, "::hot_a") >= 3, "{body}");
    // Other local users read nothing of the store: files 0640, directories 0750.
    let mut open = Vec::new();
    let mut dirs = vec![dir.path().to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            }
            if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o027 != 0 {
                open.push(format!(
                    "{:o} {}",
                    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()),
                    entry.path().display()
                ));
            }
        }
    }
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

/// Renders a flamebearer profile in Pyroscope's flame graph component in headless Chromium
/// (`tests/compat/pyroscope`), asserting it draws and lists the `expect`ed functions; saves a
/// screenshot under `tests/artifacts/`.
fn pyroscope_renders(name: &str, flamebearer: &str, expect: &[&str]) {
    let compat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/pyroscope");
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let profile = artifacts.join(format!("pyroscope-{name}.json"));
    std::fs::write(&profile, flamebearer).unwrap();
    let mut check = Command::new("node");
    check.arg(compat.join("check.mjs")).arg(&profile);
    for e in expect {
        check.args(["--expect", e]);
    }
    check
        .arg("--screenshot")
        .arg(artifacts.join(format!("pyroscope-{name}.png")));
    let out = check.output();
    let ci = std::env::var("CI").as_deref() == Ok("true");
    match out {
        Ok(out) if out.status.success() => {}
        // 2: not set up (no node_modules or Chromium): `make setup` installs them.
        Ok(out) if out.status.code() == Some(2) && !ci => {
            eprintln!(
                "skipped the Pyroscope check: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out) => panic!(
            "Pyroscope's flame graph refused the {name} profile ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) if !ci => eprintln!("skipped the Pyroscope check: node: {err}"),
        Err(err) => panic!("running node for the Pyroscope check: {err}"),
    }
}
