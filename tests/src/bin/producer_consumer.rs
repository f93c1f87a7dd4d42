//! A slow producer and an idle consumer over a `std::sync::mpsc` channel: `produce_items` spends
//! ~2 ms of CPU per item in `make_item`, so the consumer (main thread, `consume_items`) spends
//! nearly all its time blocked in `recv`, waiting on the producer.
//!
//! Usage: `producer_consumer [SECONDS]`. Summary: items consumed and produced.

use critpath_tests::workload::{Args, Deadline, burn, iterations_for, print_summary};
use std::hint::black_box;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

#[inline(never)]
fn main() {
    let args = Args::parse(&[], &[]);
    let deadline = Deadline::after(args.duration);
    let per_item = iterations_for(Duration::from_millis(2));
    let (sender, receiver) = mpsc::channel();
    let producer = thread::Builder::new()
        .name("producer".to_owned())
        .spawn(move || produce_items(sender, deadline, per_item))
        .expect("spawning the producer thread");
    let items = consume_items(&receiver);
    let produced = producer.join().expect("producer thread panicked");
    print_summary(
        "producer_consumer",
        &[("items", items), ("produced", produced)],
    );
}

/// Produces items until the deadline; dropping `sender` at the end ends the consumer's loop.
#[inline(never)]
fn produce_items(sender: Sender<u64>, deadline: Deadline, per_item: u64) -> u64 {
    let mut produced = 0;
    while !deadline.passed() {
        let item = make_item(per_item);
        sender.send(item).expect("consumer hung up");
        produced += 1;
    }
    produced
}

#[inline(never)]
fn make_item(iterations: u64) -> u64 {
    burn(iterations, 0x17e3)
}

#[inline(never)]
fn consume_items(receiver: &Receiver<u64>) -> u64 {
    let mut items = 0;
    let mut checksum = 0_u64;
    while let Ok(item) = receiver.recv() {
        checksum ^= item;
        items += 1;
    }
    black_box(checksum);
    items
}
