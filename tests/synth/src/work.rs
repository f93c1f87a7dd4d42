//! The work functions: a fixed pool of distinct, never-inlined functions that burn a calibrated
//! amount of CPU. A program's spec gives each role its own function, so every role has a symbol
//! of its own in profiles (`critpath_synth::work::w17`). A function can also end with a wait (a
//! device's service time), so that the wait's stack names the function too.

use std::hint::black_box;
use std::time::Duration;

/// Loop iterations in one unit of work (about a microsecond on this machine kind).
pub const ITERS_PER_UNIT: u64 = 660;

macro_rules! work_functions {
    ($($name:ident = $salt:literal),* $(,)?) => {
        $(
            // Each body mixes in its own constant: identical bodies would be merged into one
            // symbol by the compiler or the linker, and profiles could not tell roles apart.
            #[inline(never)]
            pub fn $name(units: u64, wait: Duration) -> u64 {
                let mut x = black_box(units | $salt);
                for i in 0..units * ITERS_PER_UNIT {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(black_box(i) ^ $salt);
                }
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                black_box(x)
            }
        )*

        /// Every work function, by index.
        pub const FUNCTIONS: &[(&str, fn(u64, Duration) -> u64)] = &[$((stringify!($name), $name)),*];
    };
}

work_functions!(
    w00 = 0x9e01,
    w01 = 0x9e02,
    w02 = 0x9e03,
    w03 = 0x9e04,
    w04 = 0x9e05,
    w05 = 0x9e06,
    w06 = 0x9e07,
    w07 = 0x9e08,
    w08 = 0x9e09,
    w09 = 0x9e0a,
    w10 = 0x9e0b,
    w11 = 0x9e0c,
    w12 = 0x9e0d,
    w13 = 0x9e0e,
    w14 = 0x9e0f,
    w15 = 0x9e10,
    w16 = 0x9e11,
    w17 = 0x9e12,
    w18 = 0x9e13,
    w19 = 0x9e14,
    w20 = 0x9e15,
    w21 = 0x9e16,
    w22 = 0x9e17,
    w23 = 0x9e18,
    w24 = 0x9e19,
    w25 = 0x9e1a,
    w26 = 0x9e1b,
    w27 = 0x9e1c,
    w28 = 0x9e1d,
    w29 = 0x9e1e,
    w30 = 0x9e1f,
    w31 = 0x9e20,
    w32 = 0x9e21,
    w33 = 0x9e22,
    w34 = 0x9e23,
    w35 = 0x9e24,
    w36 = 0x9e25,
    w37 = 0x9e26,
    w38 = 0x9e27,
    w39 = 0x9e28,
    w40 = 0x9e29,
    w41 = 0x9e2a,
    w42 = 0x9e2b,
    w43 = 0x9e2c,
    w44 = 0x9e2d,
    w45 = 0x9e2e,
    w46 = 0x9e2f,
    w47 = 0x9e30,
);

/// Runs work function `index` for `units` units.
pub fn run(index: usize, units: u64) -> u64 {
    (FUNCTIONS[index % FUNCTIONS.len()].1)(units, Duration::ZERO)
}

/// Runs work function `index` for `units` units, then waits inside it for `wait`.
pub fn run_then_wait(index: usize, units: u64, wait: Duration) -> u64 {
    (FUNCTIONS[index % FUNCTIONS.len()].1)(units, wait)
}

#[cfg(test)]
mod tests {
    /// Every function has its own code (none merged into another).
    #[test]
    fn functions_are_distinct() {
        let mut addresses: Vec<usize> = super::FUNCTIONS.iter().map(|(_, f)| *f as usize).collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), super::FUNCTIONS.len());
    }
}
