mod agent;
mod common;
mod offcpu;
mod record;
mod serve;
mod workloads;
