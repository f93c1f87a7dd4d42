mod common;
mod record;
mod workloads;
