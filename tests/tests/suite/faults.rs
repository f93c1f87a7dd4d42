//! Faults under the store: a full filesystem (a tiny tmpfs, mounted for the test — root, like
//! the kernel tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use critpath_analyzer::store::{
    Batch, Retention, Row, SampleKind, SeriesLabels, Store, StoreOptions,
};

use super::common::{critpath, kernel_test};

/// A tmpfs of a chosen size, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "critpath-test",
            ])
            .arg(&mount)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs");
        Self { _dir: dir, mount }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.mount)
            .status()
            .unwrap();
        assert!(status.success(), "resizing the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// A batch of about 40 KiB encoded: 100 stacks of long-named frames.
fn big_batch(i: i64) -> Batch {
    let start_ms = 1_764_072_000_000 + i * 10_000;
    let mut b = Batch {
        start_ms,
        end_ms: start_ms + 10_000,
        period_ns: 52_631_578,
        series: vec![SeriesLabels {
            host: "h".into(),
            // Each batch its own process, so that readers' totals tell every batch apart
            // (compaction regroups intervals).
            pid: 1000 + i as u32,
            comm: "app".into(),
            exe: "/srv/app".into(),
            build_id: String::new(),
            service: "app".into(),
        }],
        ..Batch::default()
    };
    for k in 0..100 {
        let name = format!("app::module_{i}::function_with_a_long_name_{k:0>200}");
        b.frames
            .push(critpath_analyzer::Frame::user(name, "/srv/app"));
        b.stacks.push(vec![k]);
        b.rows.push(Row {
            series: 0,
            stack: k,
            kind: SampleKind::Cpu,
            value: 1 + i64::from(k),
        });
    }
    b
}

fn keep_all() -> StoreOptions {
    StoreOptions {
        retention: Retention {
            max_age: None,
            max_bytes: None,
        },
        ..StoreOptions::default()
    }
}

/// Every process's CPU total, as readers see the store.
fn totals(dir: &Path) -> BTreeMap<u32, i64> {
    let mut out = BTreeMap::new();
    for b in Store::batches(dir, 0, i64::MAX).unwrap() {
        for r in &b.rows {
            *out.entry(b.series[r.series as usize].pid).or_default() += r.value;
        }
    }
    out
}

/// A 2 MiB filesystem filled by the writer: appends past the full disk fail (counted by the
/// caller), nothing acknowledged is lost or read twice, 100 of 100 restarts on the full disk
/// open the store (each tries its compaction and fails), and once space is freed the next
/// close compacts the log with every acknowledged batch in its parts.
#[test]
fn a_full_disk_loses_nothing_acknowledged() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let fs = Tmpfs::new("2m");
    let dir = fs.mount.join("store");
    let (mut store, _) = Store::open_with(&dir, keep_all()).unwrap();
    let mut acked = BTreeMap::new();
    let mut refused = 0;
    for i in 0..200 {
        let b = big_batch(i);
        match store.append(&b) {
            Ok(()) => {
                acked.insert(b.series[0].pid, b.total(SampleKind::Cpu));
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused > 0 && acked.len() > 5,
        "{} acked, {refused} refused",
        acked.len()
    );
    let _ = store.close(); // compaction has no room: an error, nothing lost
    assert_eq!(totals(&dir), acked);
    for restart in 0..100 {
        let (store, _) = Store::open_with(&dir, keep_all())
            .unwrap_or_else(|e| panic!("restart {restart} on a full disk: {e}"));
        let _ = store.close();
    }
    assert_eq!(totals(&dir), acked, "after 100 restarts");
    fs.resize("64m");
    let (store, _) = Store::open_with(&dir, keep_all()).unwrap();
    store.close().expect("compacts once there is room");
    let left: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "log files left: {left:?}");
    assert_eq!(totals(&dir), acked, "after compaction");
}

/// Starts `critpath agent --interval 1s --duration SECONDS --data-dir DIR` with `env`, and
/// returns it with the rest of its stderr once it says it samples.
fn start_agent(
    dir: &Path,
    seconds: u32,
    env: &[(&str, &std::ffi::OsStr)],
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead as _;
    let mut agent = Command::new(critpath())
        .args([
            "agent",
            "--interval",
            "1s",
            "--duration",
            &format!("{seconds}s"),
        ])
        .arg("--data-dir")
        .arg(dir)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(agent.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("critpath agent: sampling") {
            break;
        }
    }
    (agent, lines)
}

/// The agent's closing line in `log` and the count it gives before `label` (` dropped`,
/// ` batches written`).
fn stopped_count(log: &str, label: &str) -> u64 {
    let stopped = log
        .lines()
        .find(|l| l.contains("critpath agent: stopped;"))
        .unwrap_or_else(|| panic!("the agent did not run to its end: {log}"));
    stopped
        .split(label)
        .next()
        .and_then(|s| s.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stopped}"))
}

/// The agent whose disk fills while it runs keeps sampling, counts the batches it could not
/// store, and runs to its end; the store it leaves opens.
#[test]
fn the_agent_keeps_sampling_on_a_full_disk() {
    use std::io::Write as _;
    let Some(_machine) = kernel_test() else {
        return;
    };
    let fs = Tmpfs::new("4m");
    let dir = fs.mount.join("store");
    let (mut agent, lines) = start_agent(&dir, 8, &[]);
    // Fill what is left.
    let filler = fs.mount.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = agent.wait().unwrap();
    let log = log.join("\n");
    let dropped = stopped_count(&log, " dropped");
    assert!(dropped >= 3, "{log}");
    std::fs::remove_file(&filler).unwrap();
    let (store, _) = Store::open_with(&dir, keep_all()).expect("the store opens");
    store.close().unwrap();
}

/// The agent whose disk fails its writes and syncs with EIO for a few seconds (an LD_PRELOAD
/// shim, `tests/native/eio_shim.c`) keeps sampling, counts the batches it could not store, and
/// stores again once the disk recovers; the store it leaves opens and holds samples from before
/// and after the failure.
#[test]
fn the_agent_rides_out_io_errors() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let shim = work.path().join("eio_shim.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("native/eio_shim.c");
    let built = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(built.success(), "building the EIO shim");
    let dir = work.path().join("store");
    let control = work.path().join("eio-on");
    let (mut agent, lines) = start_agent(
        &dir,
        12,
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("CRITPATH_EIO_DIR", dir.as_os_str()),
            ("CRITPATH_EIO_CONTROL", control.as_os_str()),
        ],
    );
    // Each line the agent writes from here on is read by a thread, so that its stderr pipe
    // never fills while the test sleeps.
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    let failing_from = now_ms();
    std::fs::write(&control, b"").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    std::fs::remove_file(&control).unwrap();
    let failing_to = now_ms();
    let status = agent.wait().unwrap();
    let log = reader.join().unwrap().join("\n");
    assert!(status.success(), "the agent failed ({status}): {log}");
    let failures = log.lines().filter(|l| l.starts_with("eio-shim:")).count();
    assert!(failures > 0, "the shim failed nothing: {log}");
    let (written, dropped) = (
        stopped_count(&log, " batches written"),
        stopped_count(&log, " dropped"),
    );
    eprintln!("{written} batches written, {dropped} dropped; {failures} writes and syncs failed");
    assert!(dropped >= 2 && written >= 3, "{log}");
    let (store, _) = Store::open_with(&dir, keep_all()).expect("the store opens");
    store.close().unwrap();
    let rows = |from_ms: i64, to_ms: i64| -> usize {
        Store::batches(&dir, from_ms, to_ms)
            .unwrap()
            .iter()
            .map(|b| b.rows.len())
            .sum()
    };
    assert!(rows(0, failing_from) > 0, "nothing from before the failure");
    assert!(
        rows(failing_to + 1000, i64::MAX) > 0,
        "nothing stored after the disk recovered: {log}"
    );
}
