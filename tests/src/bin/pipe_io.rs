//! Waiting on a slow "device" through a pipe: the `device_service` thread burns ~0.2 ms of CPU in
//! `device_work`, sleeps `--service-ms` (default 5), then writes 8 bytes; the main thread blocks
//! in `read` inside `read_device` until they arrive.
//!
//! Usage: `pipe_io [SECONDS] [--service-ms MS]`. Summary: reads and bytes received.

use critpath_tests::workload::{Args, Deadline, burn, iterations_for, print_summary};
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::thread;
use std::time::Duration;

#[inline(never)]
fn main() {
    let args = Args::parse(&[("service-ms", 5)], &[]);
    let deadline = Deadline::after(args.duration);
    let work = iterations_for(Duration::from_micros(200));
    let service = Duration::from_millis(args.option("service-ms"));
    let (reader, writer) = io::pipe().unwrap_or_else(|error| {
        eprintln!("pipe_io: creating a pipe: {error}");
        std::process::exit(1)
    });
    let device = thread::Builder::new()
        .name("device".to_owned())
        .spawn(move || device_service(writer, deadline, work, service))
        .expect("spawning the device thread");
    let (reads, bytes) = read_device(reader);
    let writes = device.join().expect("device thread panicked");
    print_summary(
        "pipe_io",
        &[("reads", reads), ("bytes", bytes), ("writes", writes)],
    );
}

/// Serves 8-byte messages until the deadline; dropping `writer` then gives the reader EOF.
#[inline(never)]
fn device_service(mut writer: PipeWriter, deadline: Deadline, work: u64, service: Duration) -> u64 {
    let mut writes = 0;
    while !deadline.passed() {
        let message = device_work(work);
        thread::sleep(service);
        writer
            .write_all(&message.to_le_bytes())
            .expect("reader hung up");
        writes += 1;
    }
    writes
}

#[inline(never)]
fn device_work(iterations: u64) -> u64 {
    burn(iterations, 0xde71ce)
}

/// Reads messages until EOF; each `read` blocks until the device has written.
#[inline(never)]
fn read_device(mut reader: PipeReader) -> (u64, u64) {
    let (mut reads, mut bytes) = (0, 0);
    let mut buffer = [0_u8; 8];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return (reads, bytes),
            Ok(n) => {
                reads += 1;
                bytes += n as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => panic!("reading the pipe: {error}"),
        }
    }
}
