//! An open-loop HTTP load generator for the API's load test (`make bench-load`).
//!
//! ```text
//! loadgen ADDR PATH [--rate N] [--seconds S] [--connections C] [--base T]
//! ```
//!
//! Sends `GET PATH` to `ADDR` (`127.0.0.1:7070`) at a fixed rate over keep-alive connections
//! for a fixed time; `{t}` in PATH becomes `--base` plus the request's number (e.g. a window's
//! end in ms, moving 1 ms per request: distinct requests, none answered from a cache). Open loop: request `i` is due at `start + i / rate`, and its latency is
//! measured from when it was due, so a slow server cannot hide queueing by slowing the client
//! down (no coordinated omission). Prints the achieved rate, latency percentiles and failures
//! (any status but 200, or a broken connection); exits non-zero if any request failed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    path: String,
    rate: f64,
    seconds: f64,
    connections: usize,
    base: i64,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut args = Args {
        addr: String::new(),
        path: String::new(),
        rate: 200.0,
        seconds: 30.0,
        connections: 8,
        base: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .and_then(|v| v.parse::<f64>().map_err(|e| format!("{name} {v:?}: {e}")))
        };
        match a.as_str() {
            "--rate" => args.rate = value("--rate")?,
            "--seconds" => args.seconds = value("--seconds")?,
            "--connections" => args.connections = value("--connections")? as usize,
            "--base" => args.base = value("--base")? as i64,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => positional.push(a),
        }
    }
    let [addr, path] = <[String; 2]>::try_from(positional).map_err(
        |_| "usage: loadgen ADDR PATH [--rate N] [--seconds S] [--connections C] [--base T]",
    )?;
    (args.addr, args.path) = (addr, path);
    if args.rate <= 0.0 || args.seconds <= 0.0 || args.connections == 0 {
        return Err("--rate, --seconds and --connections must be positive".into());
    }
    Ok(args)
}

/// One keep-alive connection.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one GET and reads the whole answer; returns the status.
    fn get(&mut self, addr: &str, path: &str) -> std::io::Result<u16> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|e| std::io::Error::other(format!("chunk size {line:?}: {e}")))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut body = vec![0; length.unwrap_or(0)];
            self.reader.read_exact(&mut body)?;
        }
        Ok(status)
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => Arc::new(args),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let total = (args.rate * args.seconds).round() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (args, next, failures, latencies) = (
                Arc::clone(&args),
                Arc::clone(&next),
                Arc::clone(&failures),
                Arc::clone(&latencies),
            );
            std::thread::spawn(move || {
                let mut conn: Option<Connection> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / args.rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let path = args
                        .path
                        .replace("{t}", &(args.base + i as i64).to_string());
                    let result = match conn.as_mut() {
                        Some(c) => c.get(&args.addr, &path),
                        None => Connection::open(&args.addr).and_then(|mut c| {
                            let r = c.get(&args.addr, &path);
                            conn = Some(c);
                            r
                        }),
                    };
                    let took = due.elapsed();
                    match result {
                        Ok(200) => latencies.lock().unwrap().push(took),
                        Ok(status) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("loadgen: request {i}: HTTP {status}");
                        }
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("loadgen: request {i}: {e}");
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let failed = failures.load(Ordering::Relaxed);
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{} requests in {elapsed:.1} s: {:.1}/s achieved (target {}/s), {failed} failed; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.len() as u64 + failed,
        l.len() as f64 / elapsed,
        args.rate,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
