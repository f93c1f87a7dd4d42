//! deepchain-rs: a Rust program built like Rust's default release profile (opt-level 3, no frame
//! pointers) whose samples all share one known chain through the C library libdeepchain:
//!   deepchain_rs::main -> rust_level_1 -> rust_level_2 -> rust_level_3 -> rust_level_4
//!   -> lib_enter (libdeepchain) -> lib_level_1 -> lib_level_2 -> lib_level_3 -> rust_leaf
//! Usage: deepchain-rs SECONDS. rust_leaf spins; every other function only calls.

use std::hint::black_box;
use std::time::{Duration, Instant};

type Leaf = extern "C" fn(i64) -> i64;

#[link(name = "deepchain")]
unsafe extern "C" {
    fn lib_enter(n: i64, leaf: Leaf) -> i64;
}

static mut SECONDS: f64 = 3.0;

extern "C" fn rust_leaf(n: i64) -> i64 {
    // SAFETY: written once by main before any call reaches here; one thread.
    let end = Instant::now() + Duration::from_secs_f64(unsafe { SECONDS });
    let mut x = n as u64;
    while Instant::now() < end {
        for _ in 0..100_000 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
    }
    (x & 1) as i64
}

macro_rules! frame {
    ($name:ident, $n:ident => $call:expr) => {
        #[inline(never)]
        fn $name($n: i64) -> i64 {
            let mut pad = [0u8; 64];
            pad[($n & 63) as usize] = $n as u8;
            let pad = black_box(pad);
            let r = black_box($call);
            r + i64::from(pad[($n & 63) as usize])
        }
    };
}

// SAFETY: lib_enter calls the leaf it is given and returns.
frame!(rust_level_4, n => unsafe { lib_enter(n + 4, rust_leaf) });
frame!(rust_level_3, n => rust_level_4(n + 3));
frame!(rust_level_2, n => rust_level_3(n + 2));
frame!(rust_level_1, n => rust_level_2(n + 1));

fn main() {
    if let Some(s) = std::env::args().nth(1) {
        // SAFETY: no other thread runs yet.
        unsafe { SECONDS = s.parse().expect("SECONDS") };
    }
    black_box(rust_level_1(black_box(1)));
}
