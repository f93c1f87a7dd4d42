mod agent;
mod common;
mod groundtruth;
mod offcpu;
mod record;
mod serve;
mod workloads;
