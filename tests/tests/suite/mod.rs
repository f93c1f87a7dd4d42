mod agent;
mod common;
mod explain;
mod groundtruth;
mod offcpu;
mod record;
mod serve;
mod workloads;
