//! The work functions: a fixed pool of distinct, never-inlined functions that burn a calibrated
//! amount of CPU. A program's spec gives each role its own function, so every role has a symbol
//! of its own in profiles (`critpath_synth::work::w17`).

use std::hint::black_box;

/// Loop iterations in one unit of work (about a microsecond on this machine kind).
pub const ITERS_PER_UNIT: u64 = 660;

macro_rules! work_functions {
    ($($name:ident),* $(,)?) => {
        $(
            #[inline(never)]
            pub fn $name(units: u64) -> u64 {
                let mut x = black_box(units | 1);
                for i in 0..units * ITERS_PER_UNIT {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(black_box(i));
                }
                black_box(x)
            }
        )*

        /// Every work function, by index.
        pub const FUNCTIONS: &[(&str, fn(u64) -> u64)] = &[$((stringify!($name), $name)),*];
    };
}

work_functions!(
    w00, w01, w02, w03, w04, w05, w06, w07, w08, w09, w10, w11, w12, w13, w14, w15, w16, w17, w18,
    w19, w20, w21, w22, w23, w24, w25, w26, w27, w28, w29, w30, w31, w32, w33, w34, w35, w36, w37,
    w38, w39, w40, w41, w42, w43, w44, w45, w46, w47,
);

/// Runs work function `index` for `units` units.
pub fn run(index: usize, units: u64) -> u64 {
    (FUNCTIONS[index % FUNCTIONS.len()].1)(units)
}
