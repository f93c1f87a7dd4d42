//! The analyzer's integration tests: queries over small hand-made stores.

mod suite;
